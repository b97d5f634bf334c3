package wiring

import (
	"strconv"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laneim/laneim/wiring/pipeline"
)

// lagCollector reports, at each scrape, how far each handler's consumer
// group is behind the end of its topic: laneim_handler_lag_messages.
type lagCollector struct {
	lazyAdmin // connected at the first scrape; Close releases it
	handlers  []pipeline.Handler
	desc      *prometheus.Desc
}

func newLagCollector(cfg KafkaConfig, handlers []pipeline.Handler) *lagCollector {
	return &lagCollector{
		lazyAdmin: lazyAdmin{cfg: cfg},
		handlers:  handlers,
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
	if err := l.connect(); err != nil {
		return
	}
	for _, h := range l.handlers {
		parts, err := l.client.Partitions(h.Topic)
		if err != nil {
			continue
		}
		committed, err := committedOffsets(l.admin, pipeline.ConsumerGroup(h.Name), h.Topic, parts)
		if err != nil {
			continue
		}
		for _, p := range parts {
			at, ok := committed[p]
			if !ok {
				continue
			}
			end, err := l.client.GetOffset(h.Topic, p, sarama.OffsetNewest)
			if err != nil {
				continue
			}
			lag := end - at
			if at < 0 { // nothing committed: the group will read it all
				oldest, err := l.client.GetOffset(h.Topic, p, sarama.OffsetOldest)
				if err != nil {
					continue
				}
				lag = end - oldest
			}
			ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(max(lag, 0)), h.Name, h.Topic, strconv.Itoa(int(p)))
		}
	}
}
