package wiring

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laneim/laneim/wiring/pipeline"
)

// NewLagCollector exposes the lag collector to the external tests.
func NewLagCollector(cfg KafkaConfig, handlers []pipeline.Handler) interface {
	prometheus.Collector
	Close() error
} {
	return newLagCollector(cfg, handlers)
}
