// Command quickstart is the Go client's first round trip against a running
// ledgerd: it does the work for a key once, shows that a second call
// replays the stored result, and looks the key up.
//
//	make run                                   # in another terminal
//	go run ./clients/go/examples/quickstart    # -addr 127.0.0.1:7070 -key order-7
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7070", "ledgerd address")
	key := flag.String("key", fmt.Sprintf("order-%d", time.Now().Unix()), "idempotency key")
	flag.Parse()
	if err := run(*addr, *key); err != nil {
		log.Fatal(err)
	}
}

func run(addr, key string) error {
	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ship := func(ctx context.Context) ([]byte, error) {
		lease, _ := ledgerclient.LeaseFromContext(ctx)
		// A real step would pass lease.FencingToken to the systems it writes to.
		fmt.Printf("shipping %s under fencing token %d\n", key, lease.FencingToken)
		return []byte("shipped"), nil
	}
	for range 2 {
		result, err := client.Do(ctx, "quickstart", key, ship)
		if err != nil {
			return err
		}
		fmt.Printf("result %q, replayed %t\n", result.Value, result.Replayed)
	}

	found, err := client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "quickstart", Key: key})
	if err != nil {
		return err
	}
	e := found.GetEntry()
	fmt.Printf("lookup: state %s, owner %s, token %d, attempts %d\n", e.GetState(), e.GetOwner(), e.GetFencingToken(), e.GetAttempts())
	return nil
}
