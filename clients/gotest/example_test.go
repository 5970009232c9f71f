package gotest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
)

// The first Do of a key runs the work and records its result; the second
// replays the result without running the work.
func Example_do() {
	addr, stop := startLedgerd() // a throwaway ledgerd; yours has a fixed address
	defer stop()

	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	ctx := context.Background()
	charge := func(ctx context.Context) ([]byte, error) {
		lease, _ := ledgerclient.LeaseFromContext(ctx)
		fmt.Println("charging invoice 42 under fencing token", lease.FencingToken)
		return []byte("receipt-42"), nil
	}
	for range 2 {
		result, err := client.Do(ctx, "billing", "invoice-42", charge)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s (replayed: %t)\n", result.Value, result.Replayed)
	}
	// Output:
	// charging invoice 42 under fencing token 1
	// receipt-42 (replayed: false)
	// receipt-42 (replayed: true)
}

// A work error marked with Permanent fails the key for good: later Do calls
// report the stored failure without running the work.
func Example_permanent() {
	addr, stop := startLedgerd()
	defer stop()

	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	ctx := context.Background()
	charge := func(ctx context.Context) ([]byte, error) {
		return nil, ledgerclient.Permanent(errors.New("invoice 43 has no lines"))
	}
	_, err = client.Do(ctx, "billing", "invoice-43", charge)
	fmt.Println("first call:", errors.Is(err, ledgerclient.ErrFailed))

	_, err = client.Do(ctx, "billing", "invoice-43", charge)
	var failed *ledgerclient.FailedError
	if errors.As(err, &failed) {
		fmt.Println("second call:", errors.Is(err, ledgerclient.ErrFailed), failed.Message)
	}
	// Output:
	// first call: false
	// second call: true invoice 43 has no lines
}

// A worker that fails part way leaves a checkpoint; the next one resumes
// from it.
func Example_setCheckpoint() {
	addr, stop := startLedgerd()
	defer stop()

	client, err := ledgerclient.New(addr, ledgerclient.WithInsecure())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	rows := []string{"a", "b", "c", "d"}
	crashAt := 2 // the first worker fails at this row
	export := func(ctx context.Context) ([]byte, error) {
		lease, _ := ledgerclient.LeaseFromContext(ctx)
		next, _ := strconv.Atoi(string(lease.Checkpoint)) // 0 without a checkpoint
		fmt.Printf("attempt %d starts at row %d\n", lease.Attempt, next)
		for ; next < len(rows); next++ {
			if next == crashAt {
				crashAt = -1
				return nil, errors.New("sink timed out")
			}
			if err := ledgerclient.SetCheckpoint(ctx, []byte(strconv.Itoa(next+1))); err != nil {
				return nil, err
			}
		}
		return []byte("exported"), nil
	}

	ctx := context.Background()
	_, err = client.Do(ctx, "exports", "2024-06-01", export)
	fmt.Println("first worker:", err != nil)
	result, err := client.Do(ctx, "exports", "2024-06-01", export)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("second worker: %s\n", result.Value)
	// Output:
	// attempt 1 starts at row 0
	// first worker: true
	// attempt 2 starts at row 2
	// second worker: exported
}
