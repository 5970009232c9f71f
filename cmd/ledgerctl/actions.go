package main

import (
	"context"
	"flag"
	"fmt"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func releaseCommand() *command {
	var (
		reason string
		token  int64
	)
	return &command{
		name:    "release",
		args:    "NS KEY",
		minArgs: 2, maxArgs: 2,
		summary: "End a key's lease, whoever holds it (LedgerAdminService.ForceRelease): the next\nReserve takes the key over with a higher fencing token, and the old holder's\ncalls are refused with LEASE_LOST. Audited with your identity and --reason.",
		details: "Without --fencing-token, ledgerctl looks the key up first and releases the\n" +
			"lease it finds, by its token: if the key changed hands in between, nothing is\n" +
			"released and the exit code is 4 (LEASE_LOST). A release by token is safe to\n" +
			"repeat.\n\n" +
			"-o json prints the ForceReleaseResponse.\n\n" +
			"Exit codes: 3 unknown key; 4 the key is not leased (NOT_LEASED) or\n" +
			"--fencing-token is not its current token (LEASE_LOST).",
		flags: func(fs *flag.FlagSet) {
			reasonFlag(fs, &reason)
			fs.Int64Var(&token, "fencing-token", 0, "release only the lease with fencing token `N`")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			if token < 0 {
				return usageErrorf("--fencing-token must be positive")
			}
			namespace, key := args[0], args[1]
			if token == 0 {
				entry, err := c.lookup(ctx, namespace, key)
				if err != nil {
					return err
				}
				if entry.GetState() != ledgerv1.State_STATE_LEASED {
					return &refusal{reason: "NOT_LEASED", message: fmt.Sprintf("%s/%s is %s: there is no lease to release",
						namespace, key, stateName(entry.GetState()))}
				}
				token = entry.GetFencingToken()
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.ForceReleaseResponse, error) {
				return c.client.Admin().ForceRelease(ctx, &ledgerv1.ForceReleaseRequest{
					Namespace: namespace, Key: key, Reason: reason, FencingToken: token,
				})
			}, func(response *ledgerv1.ForceReleaseResponse) error {
				if response.GetAlreadyReleased() {
					fmt.Fprintf(c.stdout, "%s/%s: the lease of token %d was already released\n\n", namespace, formatText(key), token)
				} else {
					fmt.Fprintf(c.stdout, "released %s/%s: the lease of token %d ended; the next Reserve takes the key over\n\n", namespace, formatText(key), token)
				}
				return writeEntry(c.stdout, response.GetEntry())
			})
		},
	}
}

// lookup reads a key's entry.
func (c *cli) lookup(ctx context.Context, namespace, key string) (*ledgerv1.Entry, error) {
	rpcCtx, cancel := c.rpcContext(ctx)
	defer cancel()
	response, err := c.client.Lookup(rpcCtx, &ledgerv1.LookupRequest{Namespace: namespace, Key: key})
	return response.GetEntry(), err
}

func resetCommand() *command {
	var (
		reason string
		token  int64
	)
	return &command{
		name:    "reset",
		args:    "NS KEY",
		minArgs: 2, maxArgs: 2,
		summary: "Forget a key's result or failure, or end its lease, so that its work runs again,\ne.g. after a bad deploy (LedgerAdminService.ResetKey): the key becomes RELEASED\nand the next Reserve acquires it with a higher fencing token. The fingerprint is\nkept. Audited with your identity and --reason.",
		details: "Without --fencing-token, ledgerctl looks the key up first and resets the state\n" +
			"it saw, by its token: if the key changed in between (a run started or\n" +
			"finished), nothing is reset and the exit code is 4 (LEASE_LOST). A reset moves\n" +
			"the token on, so repeating the same reset is refused the same way: a key is\n" +
			"never reset twice by accident.\n\n" +
			"-o json prints the ResetKeyResponse.\n\n" +
			"Exit codes: 3 unknown key; 4 the key's token is not the one seen (LEASE_LOST).",
		flags: func(fs *flag.FlagSet) {
			reasonFlag(fs, &reason)
			fs.Int64Var(&token, "fencing-token", 0, "reset only if `N` is the key's current fencing token")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			if token < 0 {
				return usageErrorf("--fencing-token must be positive")
			}
			if token == 0 {
				entry, err := c.lookup(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				token = entry.GetFencingToken()
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.ResetKeyResponse, error) {
				return c.client.Admin().ResetKey(ctx, &ledgerv1.ResetKeyRequest{
					Namespace: args[0], Key: args[1], Reason: reason, FencingToken: token,
				})
			}, func(response *ledgerv1.ResetKeyResponse) error {
				fmt.Fprintf(c.stdout, "reset %s/%s: the next Reserve runs its work again\n\n", args[0], formatText(args[1]))
				return writeEntry(c.stdout, response.GetEntry())
			})
		},
	}
}

func purgeCommand() *command {
	var reason string
	return &command{
		name:    "purge",
		args:    "NS",
		minArgs: 1, maxArgs: 1,
		summary: "Remove a namespace's completed and failed entries whose retention has elapsed,\nnow rather than at the sweeper's next pass (LedgerAdminService.PurgeExpired).\nEach removal writes a purged event; the keys then show state PURGED. Audited\nwith your identity and --reason. Safe to repeat.",
		details: "-o json prints the PurgeExpiredResponse ({\"purged_entries\":\"N\"}).",
		flags: func(fs *flag.FlagSet) {
			reasonFlag(fs, &reason)
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.PurgeExpiredResponse, error) {
				return c.client.Admin().PurgeExpired(ctx, &ledgerv1.PurgeExpiredRequest{Namespace: args[0], Reason: reason})
			}, func(response *ledgerv1.PurgeExpiredResponse) error {
				noun := "entries"
				if response.GetPurgedEntries() == 1 {
					noun = "entry"
				}
				fmt.Fprintf(c.stdout, "purged %d expired %s from %s\n", response.GetPurgedEntries(), noun, args[0])
				return nil
			})
		},
	}
}
