package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/ledgerd/ledgerd/ledger"
)

// BenchmarkAuthenticate is the authentication of a valid token, as every
// call pays it: with no source ever refused, and with the limiter tracking
// 10,000 failing sources (the successful caller not among them), which
// must not slow it much.
func BenchmarkAuthenticate(b *testing.B) {
	for _, failing := range []int{0, DefaultMaxFailedAuthSources} {
		b.Run(fmt.Sprintf("failing-sources=%d", failing), func(b *testing.B) {
			auth := NewAuth(nil, AuthConfig{Logger: slog.New(slog.DiscardHandler)})
			sum := sha256.Sum256([]byte("secret"))
			auth.tokens = map[string]ledger.Token{"0123456789abcdef": {ID: "0123456789abcdef", Principal: "svc", SecretHash: sum[:]}}
			auth.loaded = true
			now := time.Now()
			for i := range failing {
				auth.failures.fail(fmt.Sprintf("10.%d.%d.%d:1234", i>>16&255, i>>8&255, i&255), now)
			}
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}})
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer ldg_0123456789abcdef_secret"))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := auth.authenticate(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
