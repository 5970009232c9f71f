// Command ledgerctl is the ops CLI of ledgerd: it shows keys, their audit
// history and the namespaces, releases, resets and purges keys, and manages
// API tokens and role bindings. It talks to ledgerd over gRPC (the Go
// client, ledgerclient), never to the database.
//
//	ledgerctl get NS KEY [--history]        a key's entry
//	ledgerctl history NS KEY                a key's audit events, oldest first
//	ledgerctl list NS [filters] [--stuck]   a namespace's entries
//	ledgerctl events NS [--since T]         audit export, JSON lines
//	ledgerctl release NS KEY --reason R     end a key's lease
//	ledgerctl reset NS KEY --reason R       let a key's work run again
//	ledgerctl purge NS --reason R           remove expired entries now
//	ledgerctl namespaces list|show|create|set
//	ledgerctl whoami                        who the token authenticates as
//	ledgerctl tokens list|create|revoke     API tokens (platform admins)
//	ledgerctl roles list|grant|revoke       role bindings (platform admins)
//
// Every call carries the API token given with --token-file PATH,
// LEDGERCTL_TOKEN_FILE, LEDGERCTL_TOKEN or --token (which other users see in
// ps), as "authorization: Bearer <token>".
//
// Output is a human-readable table by default (JSON lines for events); -o
// json prints protojson with the proto field names, one object per line.
// `ledgerctl --help` and `ledgerctl COMMAND --help` say more.
//
// Exit codes, for scripts:
//
//	0  success
//	1  internal or unexpected error (including UNIMPLEMENTED: a ledgerd too old)
//	2  usage error: unknown command or flag, missing or extra arguments
//	3  not found: the key or namespace does not exist (NOT_FOUND)
//	4  refused by the ledger: FAILED_PRECONDITION, ABORTED or ALREADY_EXISTS
//	   (e.g. LEASE_LOST, NOT_LEASED, a namespace that exists)
//	5  unavailable, out of time or rate-limited: retry later
//	   (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
//	6  invalid argument, said by the server (INVALID_ARGUMENT)
//	7  not allowed: UNAUTHENTICATED or PERMISSION_DENIED
//
// Errors go to stderr as "ledgerctl COMMAND: REASON: message", with the
// google.rpc.ErrorInfo reason of the server's status.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
