package feedsim

// novaEvent is an accepted Nova external event (seed 003), the payload of a
// servers feed entry.
type novaEvent struct {
	name, tag, status string
}

// serverTerm is the category term of a Nova external event entry.
const serverTerm = "nova.server.external_event"

const nsNova = "http://docs.rackspace.com/event/nova"

func (r *renderer) appendServerXML(b []byte, e *entry, v variant) []byte {
	t := r.f.tenant
	n := &r.f.nova[e.value]
	b = append(b, "<event xmlns=\""+nsEvent+"\" xmlns:nova=\""+nsNova+"\" dataCenter=\""...)
	b = append(b, t.dc...)
	b = append(b, "\" eventTime=\""...)
	if v == vWrongType {
		b = append(b, "yesterday"...)
	} else {
		b = appendSec(b, e.start)
	}
	b = append(b, "\" id=\""...)
	b = e.id.derive(eventIDKey).appendTo(b)
	b = append(b, "\" region=\""...)
	b = append(b, t.region...)
	b = append(b, "\" resourceId=\""...)
	b = append(b, t.agents[e.agent].serverID...)
	b = append(b, "\" tenantId=\""...)
	b = append(b, t.id...)
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
	if v == vWrongType {
		b = append(b, "yesterday"...)
	} else {
		b = appendSec(b, e.start)
	}
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
