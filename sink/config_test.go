package sink

import (
	"strings"
	"testing"
	"time"
)

// TestConfigTimeouts: the rebalance timeout must cover what a flush may
// hold its partitions for, about twice the flush timeout.
func TestConfigTimeouts(t *testing.T) {
	for _, c := range []struct {
		flush, rebalance time.Duration
		ok               bool
	}{
		{0, 0, true}, // defaults: 10 s and 60 s
		{10 * time.Second, 25 * time.Second, true},
		{10 * time.Second, 24 * time.Second, false},
		{30 * time.Second, 60 * time.Second, false},
		{3 * time.Second, 10 * time.Second, false},
	} {
		err := Config{Brokers: []string{"127.0.0.1:9092"}, FlushTimeout: c.flush, RebalanceTimeout: c.rebalance}.Validate()
		if (err == nil) != c.ok {
			t.Errorf("flush %v, rebalance %v: %v, want ok %v", c.flush, c.rebalance, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "rebalance timeout") {
			t.Errorf("error %q does not name the rebalance timeout", err)
		}
	}
}
