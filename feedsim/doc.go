// Package feedsim emulates the upstream of the pipeline: Rackspace Cloud
// Feeds (Atom Hopper) serving Cloud Backup usage feeds, with Identity v2.0
// tokens, the Cloud Backup v2 API and Nova's external events (the seeds in
// shared/seeds), injected faults, and the ground truth of what it served.
//
// # Data
//
// Everything generated is a function of Config (tenants, start, days,
// seed, agents): the same configuration serves byte-identical pages. Each
// tenant (a numeric id) has agents, some external, reporting hourly or
// daily; each agent writes storage, bandwidthIn and bandwidthOut USAGE
// entries for every interval, a license v1 USAGE entry a day (unless it is
// an external agent without serverID), a license USAGE_SNAPSHOT (product
// version 3) a day and a few system entries (CREATE, UP, DOWN, INFO, …).
// The first agent of every third tenant stores more than 2^53 bytes. A feed
// is ordered by publication time, which follows the end of each interval by
// up to ten minutes. Entries are kept as 48-byte structs and rendered on
// request (by hand, no encoding/xml), so a million entries take about
// 130 MB and a 1,000-entry page renders in about a millisecond.
//
// Entries published in the future (a history that reaches past now) and
// those published less than Config.HeadDelay ago are withheld, as Cloud
// Feeds holds back its newest entries.
//
// # Routes
//
//	POST /v2.0/tokens                                Identity v2.0 (RAX-KSKEY:apiKeyCredentials)
//	GET  /backup/events/{tid}                        the Cloud Backup feed (paging per design.md)
//	GET  /backup/events/{tid}/entries/{id}           one entry (also /backup/events/entries/{id})
//	GET  /servers/events/{tid}                       the servers feed of Nova external events
//	POST /v2/{project_id}/events                     Cloud Backup agent_activate (seed 000)
//	GET  /v2/{project_id}/agents/{agent_id}          an agent, online or offline from its heartbeats
//	POST /v2/{project_id}/agents/{agent_id}/logfiles request an agent's log (seed 001)
//	GET  /v2/agents/{agent_id}/logfiles/{id}         the log: 202 until ready, then text
//	POST /v2/{project_id}/backups                    start a backup (seed 004)
//	GET  /v2/backups/{id}                            a backup; completed ones add usage to the feed
//	POST /v2.1/{tenant_id}/os-server-external-events Nova external events (seed 003)
//	GET  /_sim/tenants                               tenants and their agents
//	GET  /_sim/truth?tenant=&from=&to=               the ground truth (Truth): served and billed
//	GET  /_sim/faults, PUT /_sim/faults              the faults in force
//
// Every route but /v2.0/tokens and /_sim/ needs X-Auth-Token unless
// Config.NoAuth is set.
//
// # Faults
//
// Request faults (429 with Retry-After, 503, 500, a connection dropped
// mid-body, a slow answer, a token expired early) are drawn per request
// from a generator seeded with Config.Seed; at most one a request. The
// malformed fault picks entries by a hash of their id: a broken tag (the
// seed's "/" without ">"; in JSON a string where the product object
// belongs), a missing required attribute, or a value of the wrong type. An
// entry keeps the shape it was first served in when the rate changes, and
// Truth lists exactly those entries and leaves them out of its sums.
//
// # Identity and corrections
//
// Config.CUF (feedmeter feedsim --cuf, off by default) adds to the generated
// history what the real upstream does with a usage event's identity
// (design.md, "Identity of a usage event" and "CUF rules"): a publisher's
// retries (the same event, CUF id and content, again under a new atom id),
// conflicting republishes (the same CUF id with another quantity or other
// times), corrections (a new event whose referenceId is the id of the event
// it corrects, with another quantity: after the original or before it,
// corrections of corrections, two corrections of one event, corrections whose
// original never comes), USAGE endTimes at midnight written as 24:00:00 of
// the day before, and USAGE_SUMMARY entries (duration, product summary="true",
// category term …usage_summary) beside the usage they restate. XML carries
// referenceId as an attribute of <event>, JSON as a member of "event". The
// CUF type's fields say how each is drawn; with all of them 0 the feed is
// byte for byte what it is without them.
//
// Truth counts the entries served (what ingest publishes, every copy) and
// what a bill counts of them, under these rules (the ones the sink follows):
//
//   - Entries served malformed are no events at all.
//   - The identity of a usage event is (tenant, CUF event id, kind). Of the
//     copies of one identity the first in feed (publication) order is the
//     event; a later copy with the same content (everything but the atom
//     id, updated and published) is republished, one with other content a
//     conflict (rejected). Neither is billed.
//   - Corrections, per tenant and kind: events link by referenceId into
//     trees. From a tree's root (an event without referenceId, or a virtual
//     root for a referenced id never published) go down, again and again, to
//     the child (an event whose referenceId is the current event's id) with
//     the latest atom:published, to the second (the sink keeps no more),
//     ties broken by the greater event id (byte order). The event reached that has no child is billed; every other
//     event of the tree is replaced. So a correction replaces its original
//     whichever comes first, a correction of a correction replaces the last
//     one, a correction whose original never comes counts as itself, and of
//     two corrections of one event the one published later counts.
//   - An event whose referenceId is its own id, or that would close a
//     cycle, is rejected; feedsim generates none.
//
// Summaries are kind other (never billable usage) and system entries are
// never republished, so their billed counts equal the served ones. The
// generated history alone has these facts: live entries and those the APIs
// add do not.
package feedsim
