package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func init() {
	commands["kafka"] = command{
		summary: "run an embedded Kafka (kfake) for local processes",
		run:     runKafka,
	}
}

// startKafka starts the in-process Kafka cluster (kfake) on listen
// ("127.0.0.1:0" picks a port), persisted in dataDir when it is set.
func startKafka(listen, dataDir string) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	if host != "127.0.0.1" && host != "localhost" {
		return nil, fmt.Errorf("--listen %q: the embedded Kafka listens on 127.0.0.1 only", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: port: %w", listen, err)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.AllowAutoTopicCreation(), kfake.GroupMinSessionTimeout(time.Second)}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	return kfake.NewCluster(opts...)
}

// kafkaBrokers resolves a --kafka value: "embedded" starts kfake in this
// process (stopped by the returned func), anything else is a broker list.
func kafkaBrokers(value, dataDir string) ([]string, func(), error) {
	if value != "embedded" {
		var brokers []string
		for _, b := range strings.Split(value, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		if len(brokers) == 0 {
			return nil, nil, errors.New("--kafka names no broker")
		}
		return brokers, func() {}, nil
	}
	c, err := startKafka("127.0.0.1:0", dataDir)
	if err != nil {
		return nil, nil, err
	}
	return c.ListenAddrs(), c.Close, nil
}

func runKafka(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kafka", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "address to listen on (127.0.0.1 only)")
	dataDir := fs.String("data-dir", "", "persist the cluster here, so that it survives restarts (default: in memory)")
	if code, ok := parseFlags(fs, args, 0); !ok {
		return code
	}
	c, err := startKafka(*listen, *dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "feedmeter kafka: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "kafka listening on %s\n", strings.Join(c.ListenAddrs(), ","))
	<-ctx.Done()
	c.Close()
	return 0
}
