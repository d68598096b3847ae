package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Modes of a subscription, after seed 000's agent modes: how often its feed
// is polled.
const (
	ModeIdle     = "idle"
	ModeActive   = "active"
	ModeRealTime = "real_time"
)

// Config configures an ingest Runner.
type Config struct {
	// Feed is the feeds' base URL; a tenant's feed is Feed + "/" + tenant
	// (e.g. https://ord.feeds.api.rackspacecloud.com/backup/events).
	Feed    string
	Tenants []string
	Client  ClientConfig
	Kafka   KafkaConfig
	// StartAt is where tenants without a checkpoint start (zero: the
	// oldest entry).
	StartAt time.Time
	// Once reads every tenant up to its head, then Run returns.
	Once bool
	// Group, when set, shares the tenants with every process of the same
	// group through Kafka's group membership; "" owns every tenant.
	Group string
	// Owner names this process in claims and logs (default host-pid).
	Owner string
	// Workers is how many slots are read at once (default 4).
	Workers int
	// Poll intervals per mode (defaults 15m, 1m, 5s) and how long an
	// activation lasts before the mode falls back to idle (default 10m).
	IdleEvery, ActiveEvery, RealTimeEvery, ActivateTTL time.Duration
	// SessionTimeout of the group membership (default 10s): how soon a dead
	// process's tenants move.
	SessionTimeout time.Duration
	Log            *slog.Logger
	Metrics        *Metrics
	// Progress, when set, receives a line per tenant as it finishes (Once).
	Progress func(line string)
}

// Validate reports what is wrong with the configuration.
func (c *Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.Feed); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("feed %q is not an http(s) URL", c.Feed))
	}
	if len(c.Tenants) == 0 {
		errs = append(errs, errors.New("no tenants"))
	}
	for _, t := range c.Tenants {
		if t == "" || strings.ContainsAny(t, "/?#% ") {
			errs = append(errs, fmt.Errorf("tenant %q is not a tenant id", t))
		}
	}
	if len(c.Kafka.Brokers) == 0 {
		errs = append(errs, errors.New("no Kafka brokers"))
	}
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	c.Feed = strings.TrimRight(c.Feed, "/")
	if c.Owner == "" {
		h, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.IdleEvery == 0 {
		c.IdleEvery = 15 * time.Minute
	}
	if c.ActiveEvery == 0 {
		c.ActiveEvery = time.Minute
	}
	if c.RealTimeEvery == 0 {
		c.RealTimeEvery = 5 * time.Second
	}
	if c.ActivateTTL == 0 {
		c.ActivateTTL = 10 * time.Minute
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	c.Kafka.Log = c.Log
	c.Kafka.defaults()
}

// Runner reads the subscriptions' feeds into Kafka.
type Runner struct {
	cfg    Config
	client *Client

	// tenantsProducer sends mode switches to the owning process (group).
	tenantsProducer *kgo.Client

	mu    sync.Mutex
	subs  map[string]*subscription // by tenant
	slots map[int32]*slotRun       // owned slots
	wg    sync.WaitGroup
}

type subscription struct {
	tenant    string
	slot      int32
	mode      string
	modeUntil time.Time
	next      time.Time // when it is due
	// What the agents report shows.
	owned       bool
	lastPoll    time.Time
	lastSuccess time.Time
	ownedSince  time.Time // when this process last took the tenant's slot
	lastErr     string
	cp          Checkpoint
	pages       int64
}

type slotRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
}

// NewRunner checks cfg and builds a runner.
func NewRunner(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	cc := cfg.Client
	if cc.Log == nil {
		cc.Log = cfg.Log
	}
	m := cfg.Metrics
	cc.OnRetry = func(status int) { m.retries.WithLabelValues(statusLabel(status)).Inc() }
	client, err := NewClient(cc)
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, client: client, subs: map[string]*subscription{}, slots: map[int32]*slotRun{}}
	for _, t := range cfg.Tenants {
		r.subs[t] = &subscription{tenant: t, slot: cfg.Kafka.Slot(t), mode: ModeIdle}
	}
	m.lag.setSource(r.lagging)
	return r, nil
}

func statusLabel(status int) string {
	if status == 0 {
		return "transport"
	}
	return fmt.Sprint(status)
}

// Run reads until ctx is done (or, with Once, until every tenant is caught
// up). With Once it returns an error naming every tenant that failed.
func (r *Runner) Run(ctx context.Context) error {
	if err := EnsureTopics(ctx, r.cfg.Kafka); err != nil {
		return err
	}
	if r.cfg.Once {
		return r.once(ctx)
	}
	if r.cfg.Group == "" {
		for _, s := range r.ownedSlots() {
			r.startSlot(ctx, s)
		}
		<-ctx.Done()
		r.stopSlots(nil, true)
		return nil
	}
	return r.group(ctx)
}

// ownedSlots lists the slots that hold configured tenants.
func (r *Runner) ownedSlots() []int32 {
	var slots []int32
	for _, s := range r.subs {
		if !slices.Contains(slots, s.slot) {
			slots = append(slots, s.slot)
		}
	}
	slices.Sort(slots)
	return slots
}

func (r *Runner) tenantsOf(slot int32) []*subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*subscription
	for _, s := range r.subs {
		if s.slot == slot {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *subscription) int { return strings.Compare(a.tenant, b.tenant) })
	return out
}

// once reads every slot's tenants to the head, Workers slots at a time.
func (r *Runner) once(ctx context.Context) error {
	sem := make(chan struct{}, r.cfg.Workers)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, slot := range r.ownedSlots() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := r.readSlot(ctx, slot, true, nil); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readSlot takes a slot over and reads its tenants: once, or on their
// schedules until ctx is done. When a publish fails (the producer fenced
// by another owner, a transaction that could not end, a commit whose
// outcome is unknown), the slot is taken over again: a new producer, and
// the checkpoints read again from Kafka, so the next page starts after
// what was committed, whatever that was.
func (r *Runner) readSlot(ctx context.Context, slot int32, once bool, wake <-chan struct{}) error {
	failed := "" // the tenant whose publish failed
	for failures, first := 0, true; ; first = false {
		start := time.Now()
		err := r.serveSlot(ctx, slot, once, wake, first, &failed)
		var pe *PublishError
		if once || !errors.As(err, &pe) || ctx.Err() != nil {
			return err
		}
		if time.Since(start) > 5*time.Minute {
			failures = 0 // the last takeover served a while: not a storm
		}
		failures++
		r.cfg.Log.Error("publishing failed: taking the slot over again", "slot", slot, "in", retryWait(failures), "err", err)
		if !sleep(ctx, retryWait(failures)) {
			return nil
		}
	}
}

// retryWait is the wait before the n-th try again at a slot (n from 1): a
// second more each time, at most 30.
func retryWait(n int) time.Duration { return min(time.Duration(n)*time.Second, 30*time.Second) }

// sleep waits d; it reports false, sooner, when ctx ends.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// serveSlot is one takeover of readSlot: it returns a *PublishError (in
// its chain) when the slot must be taken over again, and sets *failed to
// the tenant whose publish failed. The first takeover makes every tenant
// due; a later one keeps their schedules and begins with the tenants after
// *failed, so a tenant whose pages cannot be published does not come first
// again and starve the others.
func (r *Runner) serveSlot(ctx context.Context, slot int32, once bool, wake <-chan struct{}, first bool, failed *string) error {
	var sp *SlotProducer
	var cps map[string]Checkpoint
	for attempt := 1; ; attempt++ {
		var err error
		sp, cps, err = OpenSlot(ctx, r.cfg.Kafka, slot, r.cfg.Owner)
		if err == nil {
			break
		}
		if once || ctx.Err() != nil {
			return fmt.Errorf("slot %d: %w", slot, err)
		}
		r.cfg.Log.Error("cannot take the slot over; trying again", "slot", slot, "err", err)
		if !sleep(ctx, retryWait(attempt)) {
			return nil
		}
	}
	defer sp.Close()
	subs := r.tenantsOf(slot)
	if i := slices.IndexFunc(subs, func(s *subscription) bool { return s.tenant == *failed }); i >= 0 {
		subs = slices.Concat(subs[i+1:], subs[:i+1])
	}
	r.mu.Lock()
	for _, s := range subs {
		s.cp = cps[(&Checkpoint{Feed: r.feedOf(s.tenant), Tenant: s.tenant}).Key()]
		if !s.owned {
			s.ownedSince = time.Now()
		}
		s.owned = true
		if first {
			s.next = time.Now()
		}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		for _, s := range subs {
			s.owned = false
		}
		r.mu.Unlock()
	}()
	r.cfg.Log.Info("slot taken over", "slot", slot, "tenants", len(subs), "owner", r.cfg.Owner)

	var errs []error
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		for _, s := range subs {
			r.mu.Lock()
			due := !s.next.After(now)
			r.mu.Unlock()
			if due {
				if err := r.poll(ctx, sp, s); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					var pe *PublishError
					if !once && errors.As(err, &pe) {
						*failed = s.tenant
						return err // this producer is done: take the slot over again
					}
					errs = append(errs, err)
				}
			}
			r.mu.Lock()
			if s.next.Before(next) {
				next = s.next
			}
			r.mu.Unlock()
		}
		if once {
			return errors.Join(errs...)
		}
		errs = nil
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(time.Until(next)):
		}
	}
}

func (r *Runner) feedOf(tenant string) string { return r.cfg.Feed + "/" + tenant }

// poll reads one tenant to its head and schedules its next poll.
func (r *Runner) poll(ctx context.Context, sp *SlotProducer, s *subscription) error {
	r.mu.Lock()
	cp := s.cp
	r.mu.Unlock()
	m := r.cfg.Metrics
	start := time.Now()
	var entries int64
	reader := &Reader{
		Client: r.client, Feed: r.feedOf(s.tenant), Tenant: s.tenant, StartAt: r.cfg.StartAt, Log: r.cfg.Log,
		OnPage: func(b *Batch) {
			m.pages.WithLabelValues(s.tenant).Inc()
			m.entries.WithLabelValues(s.tenant).Add(float64(len(b.Events)))
			m.rejects.WithLabelValues(s.tenant).Add(float64(len(b.Rejects)))
			entries += int64(len(b.Events) + len(b.Rejects))
			r.mu.Lock()
			s.cp = b.Next
			s.pages++
			r.mu.Unlock()
		},
	}
	cp, err := reader.CatchUp(ctx, cp, sp)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s.cp = cp
	s.lastPoll = now
	if s.mode != ModeIdle && now.After(s.modeUntil) {
		s.mode = ModeIdle
	}
	s.next = now.Add(r.interval(s.mode))
	if err != nil {
		s.lastErr = err.Error()
		r.cfg.Log.Error("tenant poll failed", "tenant", s.tenant, "err", err)
		m.failures.WithLabelValues(s.tenant).Inc()
		return err
	}
	s.lastErr = ""
	s.lastSuccess = now
	if r.cfg.Progress != nil {
		secs := now.Sub(start).Seconds()
		r.cfg.Progress(fmt.Sprintf("tenant %s: %d pages, %d entries (%d rejected) in all; %d this run, %.0f entries/s; caught up to %s",
			s.tenant, s.pages, cp.Entries+cp.Rejects, cp.Rejects, entries, float64(entries)/max(secs, 1e-9), orNone(cp.Marker)))
	}
	return nil
}

// lagging returns, for each tenant this process owns, since when it lags:
// its last read to the head, or when the process took it.
func (r *Runner) lagging() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Time{}
	for _, s := range r.subs {
		if s.owned {
			since := s.ownedSince
			if s.lastSuccess.After(since) {
				since = s.lastSuccess
			}
			out[s.tenant] = since
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(empty feed)"
	}
	return s
}

func (r *Runner) interval(mode string) time.Duration {
	switch mode {
	case ModeActive:
		return r.cfg.ActiveEvery
	case ModeRealTime:
		return r.cfg.RealTimeEvery
	}
	return r.cfg.IdleEvery
}

func (r *Runner) startSlot(ctx context.Context, slot int32) {
	if len(r.tenantsOf(slot)) == 0 {
		return // a slot of no configured tenant
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.slots[slot]; ok {
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	run := &slotRun{cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	r.slots[slot] = run
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(run.done)
		if err := r.readSlot(sctx, slot, false, run.wake); err != nil {
			r.cfg.Log.Error("slot stopped", "slot", slot, "err", err)
		}
	}()
}

// stopSlots stops the given slots (all of them when all is set) and waits
// for them: an open transaction is aborted before this returns.
func (r *Runner) stopSlots(slots []int32, all bool) {
	r.mu.Lock()
	var runs []*slotRun
	for s, run := range r.slots {
		if all || slices.Contains(slots, s) {
			run.cancel()
			runs = append(runs, run)
			delete(r.slots, s)
		}
	}
	r.mu.Unlock()
	for _, run := range runs {
		<-run.done
	}
}

// wakeSlot makes the slot of tenant look at its schedule again.
func (r *Runner) wakeSlot(slot int32) {
	r.mu.Lock()
	run := r.slots[slot]
	r.mu.Unlock()
	if run != nil {
		select {
		case run.wake <- struct{}{}:
		default:
		}
	}
}

// group shares the slots with the other members of the group: each member
// reads the slots (tenants-topic partitions) Kafka assigns it.
func (r *Runner) group(ctx context.Context) error {
	topic := r.cfg.Kafka.TenantsTopic
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(r.cfg.Kafka.Brokers...),
		kgo.ConsumerGroup(r.cfg.Group),
		kgo.ConsumeTopics(topic),
		// The slots are this topic's partitions; its records are not read
		// for anything, but what a transaction did not commit does not
		// exist anywhere in feedmeter (design).
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(r.cfg.SessionTimeout),
		kgo.HeartbeatInterval(r.cfg.SessionTimeout/5),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			r.cfg.Log.Info("slots assigned", "slots", m[topic])
			for _, s := range m[topic] {
				r.startSlot(ctx, s)
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			r.cfg.Log.Info("slots revoked", "slots", m[topic])
			r.stopSlots(m[topic], false)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			r.cfg.Log.Warn("slots lost", "slots", m[topic])
			r.stopSlots(m[topic], false)
		}),
	)
	if err != nil {
		return err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(r.cfg.Kafka.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		cl.Close()
		return err
	}
	r.mu.Lock()
	r.tenantsProducer = prod
	r.mu.Unlock()
	defer func() {
		r.stopSlots(nil, true)
		cl.Close()
		prod.Close()
	}()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(rec *kgo.Record) { r.applyModeRecord(rec.Value) })
		if err := fs.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			r.cfg.Log.Warn("group poll", "err", err)
			time.Sleep(time.Second)
		}
	}
}
