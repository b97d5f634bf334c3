// Package wiring holds what every laneIM process shares: configuration of
// the infrastructure (Kafka, Redis), the Watermill router with laneIM's
// middleware, and the fx modules that provide them.
//
// It is the only package that knows infrastructure. Workers declare what
// they need as small interfaces or as Watermill types and contribute a
// Handler to the "handlers" value group; the router built here runs them.
package wiring
