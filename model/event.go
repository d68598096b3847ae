// Package model holds the normalized usage event that every stage of the
// pipeline shares: ingest produces it from feed entries, Kafka carries its
// JSON encoding, the sink writes it to ClickHouse and the query service bills
// it. It also holds the rules an event must satisfy (Validate).
package model

import (
	"errors"
	"fmt"
	"time"
)

// Kind is the billing kind of an event.
type Kind string

// The kinds. Every entry that is not one of the four Cloud Backup usage
// products (including system events and unknown products) is KindOther.
const (
	KindBandwidthIn  Kind = "bandwidthIn"
	KindBandwidthOut Kind = "bandwidthOut"
	KindStorage      Kind = "storage"
	KindLicense      Kind = "license"
	KindOther        Kind = "other"
)

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindBandwidthIn, KindBandwidthOut, KindStorage, KindLicense, KindOther:
		return true
	}
	return false
}

// Namespaces of the XML vocabularies the feed uses. JSON carries the same URIs
// in "@type".
const (
	NSAtom        = "http://www.w3.org/2005/Atom"
	NSEvent       = "http://docs.rackspace.com/core/event"
	NSCloudBackup = "http://docs.rackspace.com/usage/cloudbackup/" // + product kind
)

// Event types of the core event schema.
const (
	TypeUsage         = "USAGE"
	TypeUsageSnapshot = "USAGE_SNAPSHOT"
	TypeUsageSummary  = "USAGE_SUMMARY"
)

// IsUsageType reports whether an event type carries usage (and so needs a
// tenant). Every other type (CREATE, UP, INFO, …) is a system event.
func IsUsageType(t string) bool {
	return t == TypeUsage || t == TypeUsageSnapshot || t == TypeUsageSummary
}

// MaxUsageInterval is the longest interval a USAGE event may cover.
const MaxUsageInterval = 24 * time.Hour

// Event is one normalized feed entry. Its JSON encoding (see AppendJSON) is
// the Kafka record value and is described by schemas/event.schema.json.
//
// The zero time means "absent" and is encoded as null. External is nil when
// the entry did not say.
type Event struct {
	TenantID string
	EntryID  string // atom:id, trimmed, e.g. urn:uuid:…
	EventID  string // the content event's id (CUF event/@id)
	// ReferenceID is the id of the event this one corrects (CUF
	// event/@referenceId), "" when it corrects none.
	ReferenceID      string
	Kind             Kind
	ProductNamespace string // "" for events without a product
	ProductVersion   string
	EventType        string
	EventVersion     string
	Region           string
	DataCenter       string
	Environment      string
	ResourceID       string
	ResourceType     string
	ServerID         string // an integer or a UUID, kept as written
	ServerName       string
	External         *bool
	StartTime        time.Time
	EndTime          time.Time
	EventTime        time.Time
	// Quantity is bytes for bandwidth and storage, 1 for a license event
	// (one licensed server) and 0 for KindOther.
	Quantity  uint64
	Updated   time.Time
	Published time.Time
}

// TextBytes is the length of all of e's strings: its JSON encoding is at
// most six bytes for each of them (\u00XX) plus a few hundred, a bound
// that costs nothing to check.
func (e *Event) TextBytes() int {
	return len(e.TenantID) + len(e.EntryID) + len(e.EventID) + len(e.ReferenceID) + len(e.Kind) + len(e.ProductNamespace) +
		len(e.ProductVersion) + len(e.EventType) + len(e.EventVersion) + len(e.Region) + len(e.DataCenter) +
		len(e.Environment) + len(e.ResourceID) + len(e.ResourceType) + len(e.ServerID) + len(e.ServerName)
}

// Identity is what makes two usage events the same usage event: its tenant,
// its CUF event id and its kind. Atom Hopper gives every POST a new atom id,
// so a publisher's retry carries the same event under another entry id; and
// the seed's samples reuse one event id for bandwidthIn, bandwidthOut and
// storage, so the event id alone is not enough.
type Identity struct {
	TenantID string
	Kind     Kind
	EventID  string
}

// Identity returns the event's identity.
func (e *Event) Identity() Identity { return Identity{e.TenantID, e.Kind, e.EventID} }

// DedupeKey is the key of an event that is not usage (kind other): kept
// once per feed entry, by its atom id.
type DedupeKey struct {
	TenantID string
	EntryID  string
	Kind     Kind
}

// Key returns the event's entry key.
func (e *Event) Key() DedupeKey { return DedupeKey{e.TenantID, e.EntryID, e.Kind} }

// SameUsage reports whether e and o say the same thing: every field but
// the feed entry's (atom id, updated, published), which a republished event
// does not keep. Two copies of one identity that are not the same usage are
// a conflict.
func (e *Event) SameUsage(o *Event) bool {
	a, b := *e, *o
	a.EntryID, a.Updated, a.Published = "", time.Time{}, time.Time{}
	b.EntryID, b.Updated, b.Published = "", time.Time{}, time.Time{}
	if (a.External == nil) != (b.External == nil) || a.External != nil && *a.External != *b.External {
		return false
	}
	a.External, b.External = nil, nil
	if !a.StartTime.Equal(b.StartTime) || !a.EndTime.Equal(b.EndTime) || !a.EventTime.Equal(b.EventTime) {
		return false
	}
	a.StartTime, a.EndTime, a.EventTime = time.Time{}, time.Time{}, time.Time{}
	b.StartTime, b.EndTime, b.EventTime = time.Time{}, time.Time{}, time.Time{}
	return a == b
}

// Snapshot reports whether e is a license snapshot (USAGE_SNAPSHOT).
func (e *Event) Snapshot() bool { return e.EventType == TypeUsageSnapshot }

// IsExternal reports whether the licensed server is outside Rackspace
// (absent means false).
func (e *Event) IsExternal() bool { return e.External != nil && *e.External }

// Validate checks the rules of the event's kind. It returns nil or an error
// that names the field at fault.
func (e *Event) Validate() error {
	if e.EntryID == "" {
		return errors.New("entry_id is empty")
	}
	if !e.Kind.Valid() {
		return fmt.Errorf("kind %q is not one of bandwidthIn, bandwidthOut, storage, license, other", e.Kind)
	}
	if e.Kind == KindOther {
		if IsUsageType(e.EventType) && e.TenantID == "" {
			return fmt.Errorf("%s event has no tenantId", e.EventType)
		}
		return nil
	}
	if e.TenantID == "" {
		return fmt.Errorf("%s event has no tenantId", e.EventType)
	}
	if e.EventID == "" {
		return errors.New("event has no id")
	}
	switch {
	case e.EventType == TypeUsage:
		if e.StartTime.IsZero() {
			return errors.New("USAGE event has no startTime")
		}
		if e.EndTime.IsZero() {
			return errors.New("USAGE event has no endTime")
		}
		if !e.StartTime.Before(e.EndTime) {
			return fmt.Errorf("startTime %s is not before endTime %s",
				FormatTime(e.StartTime), FormatTime(e.EndTime))
		}
		if e.EndTime.Sub(e.StartTime) > MaxUsageInterval {
			return fmt.Errorf("interval from startTime %s to endTime %s is longer than a day",
				FormatTime(e.StartTime), FormatTime(e.EndTime))
		}
	case e.EventType == TypeUsageSnapshot && e.Kind == KindLicense:
		if e.EventTime.IsZero() {
			return errors.New("USAGE_SNAPSHOT event has no eventTime")
		}
	default:
		return fmt.Errorf("%s product cannot have event type %q", e.Kind, e.EventType)
	}
	if e.Kind == KindLicense {
		if e.Quantity != 1 {
			return fmt.Errorf("license quantity is %d, not 1", e.Quantity)
		}
		if e.Snapshot() {
			if e.ServerName == "" {
				return errors.New("license snapshot has no serverName")
			}
			if e.ServerID == "" && !e.IsExternal() {
				return errors.New("license snapshot has no serverID and is not external")
			}
		} else if e.ServerID == "" {
			return errors.New("license event has no serverID")
		}
		return nil
	}
	if e.ServerID == "" {
		return fmt.Errorf("%s event has no serverID", e.Kind)
	}
	return nil
}

// FormatTime formats t as RFC 3339 in UTC with as many fractional digits as
// it needs.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
