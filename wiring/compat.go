package wiring

import "github.com/laneim/laneim/wiring/pipeline"

// Deprecated aliases kept while the comet moves to package pipeline.
type Handler = pipeline.Handler

var (
	Permanent      = pipeline.Permanent
	IsPermanent    = pipeline.IsPermanent
	ConsumerGroup  = pipeline.ConsumerGroup
	ProvideHandler = pipeline.Provide
)

const HandlerGroup = pipeline.Group
