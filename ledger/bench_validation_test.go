package ledger

import (
	"crypto/sha256"
	"testing"
)

// The validation every call runs before it touches the database: in-process
// hot paths, benchmarked without PostgreSQL (`make bench-micro`).

// benchReserveRequest is a typical pipeline Reserve: a 36-byte key, an
// owner, a SHA-256 fingerprint and two labels.
func benchReserveRequest() ReserveRequest {
	fingerprint := sha256.Sum256([]byte("payload"))
	return ReserveRequest{
		Namespace:   "billing.invoices",
		Key:         "invoice-2026-11-27-000000000042-v1",
		Owner:       "host-17/4242/3",
		Fingerprint: fingerprint[:],
		Metadata:    map[string]string{"pipeline": "nightly", "step": "charge"},
	}
}

func BenchmarkCheckReserve(b *testing.B) {
	s := &Store{limits: DefaultLimits()}
	req := benchReserveRequest()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.checkReserve(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckReserveNoMetadata(b *testing.B) {
	s := &Store{limits: DefaultLimits()}
	req := benchReserveRequest()
	req.Metadata = nil
	b.ReportAllocs()
	for b.Loop() {
		if err := s.checkReserve(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckComplete is what Complete checks before it reads the
// namespace: the key, the token and the result against the ceiling.
func BenchmarkCheckComplete(b *testing.B) {
	limits := DefaultLimits()
	req := benchReserveRequest()
	result := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		if err := checkKey(limits, req.Namespace, req.Key); err != nil {
			b.Fatal(err)
		}
		if err := checkFencingToken(7); err != nil {
			b.Fatal(err)
		}
		if err := checkBytes("result", result, limits.MaxResultBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckReserveRejected is the price of a refusal: the error names
// the field and the limit.
func BenchmarkCheckReserveRejected(b *testing.B) {
	s := &Store{limits: DefaultLimits()}
	req := benchReserveRequest()
	req.Key = string(make([]byte, 600))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.checkReserve(req); err == nil {
			b.Fatal("a 600-byte key passed")
		}
	}
}
