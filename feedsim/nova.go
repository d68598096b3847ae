package feedsim

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// novaEvent is an accepted Nova external event (seed 003), the payload of a
// servers feed entry.
type novaEvent struct {
	name, tag, status string
}

// serverTerm is the category term of a Nova external event entry.
const serverTerm = "nova.server.external_event"

const nsNova = "http://docs.rackspace.com/event/nova"

func (r *renderer) appendServerXML(b []byte, e *entry, v variant) []byte {
	n := &r.f.nova[e.value]
	b = r.appendEventHeadXML(b, "<event xmlns=\""+nsEvent+"\" xmlns:nova=\""+nsNova+"\"", e, v, r.f.tenant.agents[e.agent].serverID)
	b = append(b, "\" type=\"UPDATE\" version=\"1\">\n        <nova:product name=\""...)
	b = appendXMLAttr(b, n.name)
	b = append(b, "\" resourceType=\"SERVER\" serviceCode=\"CloudServersOpenStack\" status=\""...)
	b = appendXMLAttr(b, n.status)
	b = append(b, "\" tag=\""...)
	b = appendXMLAttr(b, n.tag)
	b = append(b, "\" version=\"1\"/"...)
	if v != vBroken {
		b = append(b, '>')
	}
	return append(b, "\n      </event>"...)
}

func (r *renderer) appendServerJSON(b []byte, e *entry, v variant) []byte {
	t := r.f.tenant
	n := &r.f.nova[e.value]
	b = append(b, `{"@type":"`+nsEventJSON+`","dataCenter":"`...)
	b = append(b, t.dc...)
	b = append(b, `","eventTime":"`...)
	b = appendStart(b, e, v == vWrongType)
	b = append(b, `","id":"`...)
	b = e.id.derive(eventIDKey).appendTo(b)
	b = append(b, `","product":`...)
	if v == vBroken {
		b = append(b, `"<nova:product resourceType=\"SERVER\"\/"`...)
	} else {
		b = append(b, `{"@type":"http:\/\/docs.rackspace.com\/event\/nova","name":`...)
		b = appendJSONStr(b, n.name)
		b = append(b, `,"resourceType":"SERVER","serviceCode":"CloudServersOpenStack","status":`...)
		b = appendJSONStr(b, n.status)
		b = append(b, `,"tag":`...)
		b = appendJSONStr(b, n.tag)
		b = append(b, `,"version":"1"}`...)
	}
	b = append(b, `,"region":"`...)
	b = append(b, t.region...)
	b = append(b, `","resourceId":"`...)
	b = append(b, t.agents[e.agent].serverID...)
	b = append(b, `","tenantId":"`...)
	b = append(b, t.id...)
	return append(b, `","type":"UPDATE","version":"1"}`...)
}

// Nova's external event names and statuses (seed 003).
var (
	novaNames    = []string{"network-changed", "network-vif-plugged", "network-vif-unplugged", "network-vif-deleted"}
	novaStatuses = []string{"failed", "completed", "in-progress"}
)

func novaError(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]any{kind: map[string]any{"code": status, "message": msg}})
}

// handleExternalEvents is POST /v2.1/{tenant_id}/os-server-external-events
// (seed 003). The body is validated as a whole (400 on any fault); then
// each event gets a code: 200 when dispatched, 404 when the server does not
// exist, 422 when it is not assigned to a host. The answer is 200 when all
// were dispatched, 207 when some were, 404 when none was. Dispatched events
// become entries of the tenant's servers feed.
func (s *Server) handleExternalEvents(w http.ResponseWriter, r *http.Request, drop bool) {
	var raw map[string]json.RawMessage
	if err := decodeBody(r, &raw); err != nil {
		novaError(w, http.StatusBadRequest, "badRequest", "Malformed request body: "+err.Error())
		return
	}
	bad := func(msg string) {
		novaError(w, http.StatusBadRequest, "badRequest", "Invalid input for field/attribute events. "+msg)
	}
	list, ok := raw["events"]
	if !ok {
		bad("'events' is a required property")
		return
	}
	for k := range raw {
		if k != "events" {
			bad("Additional properties are not allowed ('" + k + "' was unexpected)")
			return
		}
	}
	var events []map[string]json.RawMessage
	if err := json.Unmarshal(list, &events); err != nil {
		bad("'events' is not a list of objects")
		return
	}
	if len(events) == 0 {
		bad("[] is too short")
		return
	}
	type result struct {
		Code       int    `json:"code"`
		Name       string `json:"name"`
		ServerUUID string `json:"server_uuid"`
		Status     string `json:"status"`
		Tag        string `json:"tag"`
	}
	results := make([]result, len(events))
	for i, ev := range events {
		str := func(key string, required bool) (string, bool) {
			v, ok := ev[key]
			if !ok {
				if required {
					bad("'" + key + "' is a required property")
				}
				return "", !required
			}
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				bad(string(v) + " is not of type 'string'")
				return "", false
			}
			return s, true
		}
		for k := range ev {
			switch k {
			case "name", "tag", "status", "server_uuid":
			default:
				bad("Additional properties are not allowed ('" + k + "' was unexpected)")
				return
			}
		}
		res := &results[i]
		var ok bool
		if res.Name, ok = str("name", true); !ok {
			return
		}
		if !slices.Contains(novaNames, res.Name) {
			bad(quote(res.Name) + " is not one of " + strings.Join(novaNames, ", "))
			return
		}
		if res.Tag, ok = str("tag", true); !ok {
			return
		}
		if len(res.Tag) > 255 {
			bad("tag is longer than 255 characters")
			return
		}
		if res.ServerUUID, ok = str("server_uuid", true); !ok {
			return
		}
		if _, ok := parseUUID(res.ServerUUID); !ok {
			bad(quote(res.ServerUUID) + " is not a 'uuid'")
			return
		}
		if res.Status, ok = str("status", false); !ok {
			return
		}
		if res.Status == "" {
			res.Status = "completed"
		}
		if !slices.Contains(novaStatuses, res.Status) {
			bad(quote(res.Status) + " is not one of " + strings.Join(novaStatuses, ", "))
			return
		}
	}
	t := s.byID[r.PathValue("tenant_id")]
	now := s.now()
	accepted := 0
	for i := range results {
		res := &results[i]
		u, _ := parseUUID(res.ServerUUID)
		a, found := -1, false
		if t != nil {
			a, found = t.byServer[u]
		}
		switch {
		case !found:
			res.Code = http.StatusNotFound
			res.Status = "failed"
		case t.agents[a].host == "":
			res.Code = http.StatusUnprocessableEntity
			res.Status = "failed"
		default:
			res.Code = http.StatusOK
			accepted++
			s.api.mu.Lock()
			t.servers.addNova(s.api.rng, entry{kind: kServer, agent: uint16(a), start: now.Unix()},
				novaEvent{name: res.Name, tag: res.Tag, status: res.Status}, now)
			s.api.mu.Unlock()
		}
	}
	switch {
	case accepted == 0:
		novaError(w, http.StatusNotFound, "itemNotFound", "No instances found for any event")
	case accepted < len(results):
		writeJSON(w, http.StatusMultiStatus, map[string]any{"events": results})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"events": results})
	}
}

// addNova appends a Nova event entry to a servers feed.
func (f *feed) addNova(r *rng, e entry, n novaEvent, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.value = uint64(len(f.nova))
	f.nova = append(f.nova, n)
	e.published = now.UnixMilli()
	for {
		e.id = r.uuid()
		if f.appendLocked(e) {
			return
		}
	}
}
