package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
)

// The in-process work of a Reserve and a Complete around the store call:
// request conversion, response building and the wire encoding, benchmarked
// without PostgreSQL (`make bench-micro`).

func benchReserveRequest() *ledgerv1.ReserveRequest {
	return &ledgerv1.ReserveRequest{
		Namespace:   "billing.invoices",
		Key:         "invoice-2026-11-27-000000000042-v1",
		Owner:       "host-17/4242/3",
		LeaseTtl:    durationpb.New(30 * time.Second),
		Fingerprint: make([]byte, 32),
		Metadata:    map[string]string{"pipeline": "nightly", "step": "charge"},
	}
}

func benchAcquired() ledger.Reservation {
	return ledger.Reservation{
		Outcome: ledger.Acquired, FencingToken: 7, LeaseExpiresAt: time.Now().Add(30 * time.Second),
		LeaseTTL: 30 * time.Second, Attempt: 2, Takeover: true, PreviousOwner: "host-3/17/1", Owner: "host-17/4242/3",
	}
}

// BenchmarkReserveResponse builds and encodes the answer to an acquired
// Reserve, as the handler and gRPC's codec do.
func BenchmarkReserveResponse(b *testing.B) {
	r := benchAcquired()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proto.Marshal(reserveResponse(r)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReserveResponseCompleted is the replay's answer: the stored
// result travels back.
func BenchmarkReserveResponseCompleted(b *testing.B) {
	r := ledger.Reservation{Outcome: ledger.Completed, FencingToken: 3, Owner: "host-17/4242/3",
		Result: make([]byte, 256), FinishedAt: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proto.Marshal(reserveResponse(r)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeReserveRequest decodes a Reserve through the server's
// lenient codec and converts its durations, as the handler does.
func BenchmarkDecodeReserveRequest(b *testing.B) {
	data, err := proto.Marshal(benchReserveRequest())
	if err != nil {
		b.Fatal(err)
	}
	codec := newLenientCodec()
	b.ReportAllocs()
	for b.Loop() {
		var req ledgerv1.ReserveRequest
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &req); err != nil {
			b.Fatal(err)
		}
		if _, err := duration("lease_ttl", req.GetLeaseTtl()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompleteRequestRoundTrip encodes a Complete as a client does and
// decodes it as the server does.
func BenchmarkCompleteRequestRoundTrip(b *testing.B) {
	req := &ledgerv1.CompleteRequest{Namespace: "billing.invoices", Key: "invoice-2026-11-27-000000000042-v1",
		FencingToken: 7, Result: make([]byte, 256)}
	codec := newLenientCodec()
	b.ReportAllocs()
	for b.Loop() {
		data, err := proto.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		var decoded ledgerv1.CompleteRequest
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &decoded); err != nil {
			b.Fatal(err)
		}
	}
}
