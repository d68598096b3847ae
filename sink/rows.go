package sink

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/feedmeter/feedmeter/model"
)

// source names the Kafka record a row came from.
type source struct {
	topic     string
	partition int32
	offset    int64
}

func (s source) String() string {
	return s.topic + "/" + strconv.FormatInt(int64(s.partition), 10) + "/" + strconv.FormatInt(s.offset, 10)
}

// eventRow is one decoded, valid event and where it came from.
type eventRow struct {
	ev    model.Event
	split model.Split // usage kinds only
	src   source
	raw   []byte // the record's value
	seq   int    // usage kinds only: the row's place in the batch in Kafka order (rows are sorted for the insert)
	// Usage kinds only: fingerprints (idFingerprint) of the event id and
	// of the referenceId (0 for none), for the key cache.
	idFP, refFP uint64
}

// rejectRow is one dead letter for the rejects table.
type rejectRow struct {
	dl      model.DeadLetter
	src     source // the record it came from: the dead letter's, or the usage record's
	topicID string // the life of src's topic (its id; "" where the cluster has none)
	fp      string // fingerprint of what it says
}

// rejectKey is the identity of a reject: what it says, and the Kafka record
// it came from (topic, its life, partition, offset). A record read again
// (a replay) is one reject; identical bad records at two offsets (an
// upstream that sends the same broken entry twice), or at one offset of two
// lives of a topic, are two.
type rejectKey struct {
	fp      string
	topicID string
	src     source
}

func (r *rejectRow) key() rejectKey { return rejectKey{r.fp, r.topicID, r.src} }

// has reports whether found holds k, or k's record without a topic id (a
// row of a sink before 0007).
func has(found map[rejectKey]bool, k rejectKey) bool {
	if found[k] {
		return true
	}
	k.topicID = ""
	return found[k]
}

// setTopicIDs names the life of each reject's topic, from the ids the
// batch's partitions were fetched under.
func setTopicIDs(rs []rejectRow, ids map[source]string) {
	for i := range rs {
		rs[i].topicID = ids[source{topic: rs[i].src.topic, partition: rs[i].src.partition}]
	}
}

// fingerprint is what a reject says: stage, place, entry, reason and the
// bad bytes (with rejectRow.src, its identity).
func fingerprint(d *model.DeadLetter) string {
	h := sha256.New()
	for _, s := range []string{d.Stage, d.Feed, d.TenantID, d.EntryID, d.Reason} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(d.Raw)
	return hex.EncodeToString(h.Sum(nil))
}

func newReject(src source, dl model.DeadLetter) rejectRow {
	return rejectRow{src: src, dl: dl, fp: fingerprint(&dl)}
}

// The range of ClickHouse DateTime (UInt32 seconds) and Date (UInt16 days).
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Date(2105, 12, 31, 23, 59, 59, 0, time.UTC)
)

// decoded is what a batch of records turned into.
type decoded struct {
	usage   []eventRow
	other   []eventRow
	rejects []rejectRow
	// deadLetters are the rejects the sink made itself; they also go to the
	// dead-letter topic.
	deadLetters []rejectRow
	in          *model.Interner // the repeating strings of the events (nil: none kept)
	ev          model.Event
	pieces      []model.Piece // where the rows' splits are cut from
	// misrouted counts usage events whose record key is not their tenant,
	// which the exactness argument assumes it is; first is the first one.
	misrouted int
	first     source
}

// sortRows sorts rows, in place, in the order of the tables' ORDER BY (tenant_id,
// kind, entry_id), rows with equal keys in their order in rows (so the first
// one read stays the one kept). ClickHouse sorts every inserted block by
// that key; a block that arrives sorted costs it a quarter of the time
// (measured on 18.16: 500,000 rows into usage_events, 2.1-2.6 s unsorted,
// 0.6 s sorted, views off), and the permutation is cheaper here.
func sortRows(rows []eventRow) []eventRow {
	if len(rows) < 2 {
		return rows
	}
	// Sort small integer keys, not the rows and not their strings (which
	// took a sixth of the sink's CPU): the rank of the row's (tenant, kind)
	// among the batch's few distinct ones, then eight bytes of entry_id
	// after the prefix every entry_id of the batch shares ("urn:uuid:"), and
	// only when both are equal the whole entry_id, then the row's place.
	type group struct{ tenant, kind string }
	ranks := map[group]uint32{}
	for i := range rows {
		ranks[group{rows[i].ev.TenantID, string(rows[i].ev.Kind)}] = 0
	}
	groups := make([]group, 0, len(ranks))
	for g := range ranks {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b group) int {
		return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.kind, b.kind))
	})
	for i, g := range groups {
		ranks[g] = uint32(i)
	}
	shared := len(rows[0].ev.EntryID)
	for i := range rows {
		shared = commonPrefix(rows[0].ev.EntryID[:shared], rows[i].ev.EntryID)
	}
	type sortKey struct {
		group  uint32
		i      int32
		prefix uint64
	}
	keys := make([]sortKey, len(rows))
	for i := range rows {
		e := &rows[i].ev
		keys[i] = sortKey{ranks[group{e.TenantID, string(e.Kind)}], int32(i), prefix8(e.EntryID[shared:])}
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if c := cmp.Compare(a.group, b.group); c != 0 {
			return c
		}
		if c := cmp.Compare(a.prefix, b.prefix); c != 0 {
			return c
		}
		if c := strings.Compare(rows[a.i].ev.EntryID, rows[b.i].ev.EntryID); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	// Permute in place, a cycle at a time (a copy was a second batch-sized
	// allocation): row p takes the row keys[p].i; done ones are marked -1.
	for start := range keys {
		if keys[start].i < 0 {
			continue
		}
		tmp, p := rows[start], start
		for {
			from := int(keys[p].i)
			keys[p].i = -1
			if from == start {
				rows[p] = tmp
				break
			}
			rows[p] = rows[from]
			p = from
		}
	}
	return rows
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// prefix8 returns the first eight bytes of s as a big-endian number, zeros
// after its end: numbers compare as the strings' prefixes do.
func prefix8(s string) uint64 {
	var b [8]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:])
}

// decodeUsage turns a usage-topic record into a row of d, or a reject.
func (d *decoded) decodeUsage(r *kgo.Record, now time.Time) {
	src := source{r.Topic, r.Partition, r.Offset}
	e := &d.ev // not a variable of its own: that escaped, one allocation per event
	err := model.DecodeJSON(r.Value, e, d.in)
	if err == nil {
		err = e.Validate()
		if err != nil {
			err = fmt.Errorf("invalid event: %w", err)
		}
	}
	if err == nil {
		err = checkRange(e)
	}
	if err != nil {
		entry := e.EntryID
		for _, h := range r.Headers {
			if h.Key == model.HeaderEntryID && entry == "" {
				entry = string(h.Value)
			}
		}
		rj := newReject(src, model.DeadLetter{
			Stage: model.StageSink, TenantID: string(r.Key), EntryID: entry, Index: int(r.Offset),
			Reason: err.Error(), Raw: r.Value, Time: now, Source: src.String(),
		})
		d.rejects = append(d.rejects, rj)
		d.deadLetters = append(d.deadLetters, rj)
		return
	}
	if e.Kind == model.KindOther {
		d.other = append(d.other, eventRow{ev: *e, src: src, raw: r.Value})
		return
	}
	if string(r.Key) != e.TenantID {
		if d.misrouted == 0 {
			d.first = src
		}
		d.misrouted++
	}
	var split model.Split
	split, d.pieces = model.AppendSplit(d.pieces, e)
	row := eventRow{ev: *e, split: split, src: src, raw: r.Value, idFP: idFingerprint(e.Kind, e.EventID)}
	if e.ReferenceID != "" {
		row.refFP = idFingerprint(e.Kind, e.ReferenceID)
	}
	d.usage = append(d.usage, row)
}

// decodeDeadLetter turns a dead-letter-topic record into a reject row.
// The sink's own dead letters are skipped: it inserted them when it made
// them. A record that is not a dead letter is kept as a sink reject.
func (d *decoded) decodeDeadLetter(r *kgo.Record, now time.Time) {
	src := source{r.Topic, r.Partition, r.Offset}
	dl, err := model.DecodeDeadLetter(r.Value)
	if err != nil {
		d.rejects = append(d.rejects, newReject(src, model.DeadLetter{
			Stage: model.StageSink, TenantID: string(r.Key), Index: int(r.Offset),
			Reason: err.Error(), Raw: r.Value, Time: now, Source: src.String(),
		}))
		return
	}
	if dl.Stage == model.StageSink {
		return
	}
	if dl.Time.IsZero() || dl.Time.Before(minTime) || dl.Time.After(maxTime) {
		dl.Time = now
	}
	d.rejects = append(d.rejects, newReject(src, dl))
}

// checkRange rejects times that ClickHouse's DateTime cannot hold.
func checkRange(e *model.Event) error {
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"start_time", e.StartTime}, {"end_time", e.EndTime}, {"event_time", e.EventTime}, {"updated", e.Updated}, {"published", e.Published}} {
		if !f.t.IsZero() && (f.t.Before(minTime) || f.t.After(maxTime)) {
			return fmt.Errorf("%s %s is outside the range ClickHouse can store (1970 to 2105)", f.name, model.FormatTime(f.t))
		}
	}
	return nil
}

// fileTime is the time an event is filed under (its partition).
func fileTime(e *model.Event, now time.Time) time.Time {
	for _, t := range []time.Time{e.StartTime, e.EventTime, e.Updated, e.Published} {
		if !t.IsZero() {
			return t.UTC()
		}
	}
	return now
}

// serverKey is the server dimension of the rollups.
func serverKey(e *model.Event) string {
	if e.ServerID == "" && e.ServerName != "" {
		return "name:" + e.ServerName
	}
	return e.ServerID
}

var decimalZero = decimal.Zero

func toDecimal(u model.Uint128) decimal.Decimal {
	if u.IsZero() {
		return decimalZero
	}
	if u.Hi == 0 {
		return decimal.NewFromUint64(u.Lo)
	}
	return decimal.NewFromBigInt(u.Big(), 0)
}

// optTime splits t into a nullable DateTime and its nanoseconds: nil when t
// is zero, else slot holding t's whole seconds. (clickhouse-go writes NULL
// for a nil pointer; a sql.NullTime that is not Valid it writes as 1970.)
func optTime(t time.Time, slot *time.Time) (*time.Time, uint32) {
	if t.IsZero() {
		return nil, 0
	}
	*slot = t.UTC().Truncate(time.Second)
	return slot, uint32(t.Sub(*slot))
}

func optBool(b *bool) *uint8 {
	if b == nil {
		return nil
	}
	var v uint8
	if *b {
		v = 1
	}
	return &v
}
