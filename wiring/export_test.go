package wiring

import "github.com/prometheus/client_golang/prometheus"

// NewLagCollector exposes the lag collector to the external tests.
func NewLagCollector(cfg KafkaConfig, handlers []Handler) interface {
	prometheus.Collector
	Close() error
} {
	return newLagCollector(cfg, handlers)
}
