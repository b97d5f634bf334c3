package clientpb

// Expand gives each message of b whose conversation, sender or
// content_type is empty the value b.Shared has for it, then clears
// Shared: a compact batch (Login.compact_batches) becomes the batch of
// whole messages it stands for. A batch without Shared is unchanged.
func (b *MessageBatch) Expand() {
	s := b.GetShared()
	if s == nil {
		return
	}
	for _, m := range b.GetMessages() {
		if m.Conversation == "" {
			m.Conversation = s.GetConversation()
		}
		if m.Sender == "" {
			m.Sender = s.GetSender()
		}
		if m.ContentType == "" {
			m.ContentType = s.GetContentType()
		}
	}
	b.Shared = nil
}
