// Package model holds the normalized usage event that every stage of the
// pipeline shares: ingest produces it from feed entries, Kafka carries its
// JSON encoding, the sink writes it to ClickHouse and the query service bills
// it. It also holds the rules an event must satisfy (Validate).
package model

import (
	"errors"
	"fmt"
	"strconv"
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
	if e.ReferenceID != "" && e.ReferenceID == e.EventID {
		return fmt.Errorf("event referenceId %q is the event's own id: an event cannot correct itself", e.ReferenceID)
	}
	// The rules of core.xsd hold for every usage event whatever its product,
	// so for kind other too: the schema checks the event envelope before it
	// knows the product, so a USAGE event of an unknown product that breaks
	// one could not have been published either, and keeping it as other
	// would hide a broken upstream. System events are kept as they come: the
	// schema asks the same of their times, but nothing of theirs is billed.
	if IsUsageType(e.EventType) {
		if err := e.validateUsage(); err != nil {
			return err
		}
	}
	if e.Kind == KindOther {
		return nil
	}
	if e.EventID == "" {
		return errors.New("event has no id")
	}
	switch {
	case e.EventType == TypeUsage:
	case e.EventType == TypeUsageSnapshot && e.Kind == KindLicense:
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

// validateUsage checks what core.xsd asserts of a usage event (USAGE,
// USAGE_SNAPSHOT, USAGE_SUMMARY): a tenant; eventTime, or startTime and
// endTime, never both forms; startTime before endTime; a USAGE event covers
// at most a day, and from event version 2 ends on startTime's day or at the
// midnight after it. A zero time is an absent one.
func (e *Event) validateUsage() error {
	t := e.EventType
	if e.TenantID == "" {
		return fmt.Errorf("%s event has no tenantId", t)
	}
	hasEvent, hasStart, hasEnd := !e.EventTime.IsZero(), !e.StartTime.IsZero(), !e.EndTime.IsZero()
	switch {
	case hasEvent && (hasStart || hasEnd):
		return fmt.Errorf("%s event has eventTime and also startTime or endTime: it has one or the other", t)
	case t == TypeUsageSnapshot && !hasEvent:
		return errors.New("USAGE_SNAPSHOT event has no eventTime")
	case t == TypeUsage && !hasStart:
		return errors.New("USAGE event has no startTime")
	case hasStart && !hasEnd:
		return fmt.Errorf("%s event has startTime but no endTime", t)
	case hasEnd && !hasStart:
		return fmt.Errorf("%s event has endTime but no startTime", t)
	case !hasEvent && !hasStart:
		return fmt.Errorf("%s event has neither eventTime nor startTime and endTime", t)
	case !hasStart:
		return nil
	case !e.StartTime.Before(e.EndTime):
		return fmt.Errorf("startTime %s is not before endTime %s", FormatTime(e.StartTime), FormatTime(e.EndTime))
	case t != TypeUsage:
		return nil
	case e.EndTime.Sub(e.StartTime) > MaxUsageInterval:
		return fmt.Errorf("interval from startTime %s to endTime %s is longer than a day",
			FormatTime(e.StartTime), FormatTime(e.EndTime))
	}
	if e.EventVersion == "" {
		return nil
	}
	v, err := strconv.ParseInt(e.EventVersion, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		// core.xsd reads the version of a USAGE event as an xs:integer
		// (the midnight rule): any other version fails that assertion.
		return fmt.Errorf("USAGE event version %q is not an integer", e.EventVersion)
	}
	if v >= 2 && !withinDay(e.StartTime.UTC(), e.EndTime.UTC()) {
		return fmt.Errorf("USAGE event of version %s goes beyond midnight: startTime %s, endTime %s",
			e.EventVersion, FormatTime(e.StartTime), FormatTime(e.EndTime))
	}
	return nil
}

// withinDay is core.xsd's test that a usage interval does not go beyond
// midnight: end is on start's (UTC) day, or its time of day starts with
// 00:00:00 — the midnight that ends start's day, fractions of its second
// included, as the schema compares the time as text.
func withinDay(start, end time.Time) bool {
	sy, sm, sd := start.Date()
	ey, em, ed := end.Date()
	if sy == ey && sm == em && sd == ed {
		return true
	}
	h, m, s := end.Clock()
	return h == 0 && m == 0 && s == 0
}

// FormatTime formats t as RFC 3339 in UTC with as many fractional digits as
// it needs.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
