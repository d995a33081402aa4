// Package api serves Bifrost's HTTP API: JSON calls under /api/v1/ to
// publish, read and change retained messages, inspect, list and kick
// sessions, change a persistent session's subscriptions, and see and change
// the cluster (members, ranges, split, merge, balancer). Every frontend
// (and standalone) serves it on its own address (--api).
//
// The handlers are thin: each call is one of the MQTT frontend's operator
// methods (mqtt.Server.Publish and its neighbours), which take the path a
// client's packet takes, or one of the stores' admin gRPC calls. Every call
// names a tenant (query parameter tenant or header X-Bifrost-Tenant,
// default "default"). With a token configured, every /api/v1/ call needs it
// as a bearer token; a server on a non-loopback address refuses to start
// without one. The caller's mistakes are 4xx with a JSON message, never
// 500. openapi.json documents every route; a test holds the two together.
package api
