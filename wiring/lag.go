package wiring

import (
	"strconv"
	"sync"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laneim/laneim/wiring/pipeline"
)

// lagCollector reports, at each scrape, how far each handler's consumer
// group is behind the end of its topic: laneim_handler_lag_messages.
type lagCollector struct {
	cfg      KafkaConfig
	handlers []pipeline.Handler
	desc     *prometheus.Desc

	mu     sync.Mutex
	client sarama.Client // created at the first scrape
}

func newLagCollector(cfg KafkaConfig, handlers []pipeline.Handler) *lagCollector {
	return &lagCollector{
		cfg:      cfg,
		handlers: handlers,
		desc: prometheus.NewDesc("laneim_handler_lag_messages",
			"Messages of the handler's topic not yet committed by its consumer group, by partition.",
			[]string{"handler", "topic", "partition"}, nil),
	}
}

func (l *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect asks Kafka for each partition's end and each group's committed
// offset. A failure leaves the metric out of this scrape.
func (l *lagCollector) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client == nil {
		c, err := sarama.NewClient(l.cfg.Brokers, l.cfg.sarama())
		if err != nil {
			return
		}
		l.client = c
	}
	for _, h := range l.handlers {
		parts, err := l.client.Partitions(h.Topic)
		if err != nil {
			continue
		}
		om, err := sarama.NewOffsetManagerFromClient(pipeline.ConsumerGroup(h.Name), l.client)
		if err != nil {
			continue
		}
		for _, p := range parts {
			end, err := l.client.GetOffset(h.Topic, p, sarama.OffsetNewest)
			if err != nil {
				continue
			}
			pom, err := om.ManagePartition(h.Topic, p)
			if err != nil {
				continue
			}
			next, _ := pom.NextOffset()
			pom.AsyncClose()
			lag := end - next
			if next < 0 { // nothing committed: the group will read it all
				oldest, err := l.client.GetOffset(h.Topic, p, sarama.OffsetOldest)
				if err != nil {
					continue
				}
				lag = end - oldest
			}
			ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(max(lag, 0)), h.Name, h.Topic, strconv.Itoa(int(p)))
		}
		om.Close()
	}
}

// Close releases the Kafka client.
func (l *lagCollector) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client != nil {
		return l.client.Close()
	}
	return nil
}
