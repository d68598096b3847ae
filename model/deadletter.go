package model

import (
	"encoding/json"
	"fmt"
	"time"
)

// Topics and their defaults. Every process takes them from flags; these
// are the values when none is given.
const (
	TopicUsage       = "feedmeter.usage.v1"    // key: tenant id; value: Event JSON
	TopicCheckpoints = "feedmeter.checkpoints" // compacted; key: feed + tenant
	TopicDeadLetter  = "feedmeter.deadletter"  // key: tenant id; value: DeadLetter JSON
	HeaderKind       = "kind"                  // usage record header: the event's kind
	HeaderEntryID    = "entry_id"              // usage record header: the atom id
)

// Where a dead letter was made.
const (
	StageIngest = "ingest" // an entry that did not parse or validate
	StageSink   = "sink"   // a usage record that could not be decoded or inserted
)

// DeadLetter is something that could not be counted: an entry that did not
// become an event, or a record the sink could not use. Nothing is dropped
// silently: it goes to the dead-letter topic, and from there to ClickHouse.
type DeadLetter struct {
	Stage    string    `json:"stage"`            // StageIngest or StageSink
	Feed     string    `json:"feed,omitempty"`   // the feed URL, without query
	TenantID string    `json:"tenant_id"`        // the subscription's (or record key's) tenant
	Marker   string    `json:"marker,omitempty"` // the marker of the page request
	EntryID  string    `json:"entry_id,omitempty"`
	Index    int       `json:"index"` // position on the page, or the Kafka offset for the sink
	Reason   string    `json:"reason"`
	Raw      []byte    `json:"raw"` // the entry or record as received (base64 in JSON)
	Time     time.Time `json:"time"`
	// Source names the Kafka record for StageSink: topic/partition/offset.
	Source string `json:"source,omitempty"`
}

// MarshalJSON encodes with Time in RFC 3339 UTC.
func (d DeadLetter) MarshalJSON() ([]byte, error) {
	type plain DeadLetter
	p := plain(d)
	p.Time = d.Time.UTC()
	return json.Marshal(p)
}

// DecodeDeadLetter reads a dead-letter record value.
func DecodeDeadLetter(b []byte) (DeadLetter, error) {
	var d DeadLetter
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("decode dead letter: %w", err)
	}
	if d.Stage != StageIngest && d.Stage != StageSink {
		return d, fmt.Errorf("decode dead letter: stage %q is not %s or %s", d.Stage, StageIngest, StageSink)
	}
	return d, nil
}
