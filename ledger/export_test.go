package ledger

// QueryText exposes the embedded statements to the external tests (query
// plans).
var QueryText = query

// TakeBatchSlots takes every batch slot, as that many running batches
// would, until release is called.
func (s *Store) TakeBatchSlots() (release func()) {
	for range cap(s.batchSlots) {
		s.batchSlots <- struct{}{}
	}
	return func() {
		for range cap(s.batchSlots) {
			<-s.batchSlots
		}
	}
}
