package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

func whoamiCommand() *command {
	return &command{
		name:    "whoami",
		maxArgs: 0,
		summary: "Show who ledgerd authenticates your API token as, and that principal's role\nbindings (LedgerAdminService.WhoAmI). Any valid token may ask.",
		details: "A ledgerd that runs without authentication (development) answers\n" +
			"\"anonymous\", with no bindings: every call is allowed there.\n\n" +
			"-o json prints the WhoAmIResponse.\n\n" +
			"Exit codes: 7 no token, or one that is unknown, expired or revoked\n" +
			"(UNAUTHENTICATED).",
		run: func(ctx context.Context, c *cli, _ []string) error {
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.WhoAmIResponse, error) {
				return c.client.Admin().WhoAmI(ctx, &ledgerv1.WhoAmIRequest{})
			}, func(who *ledgerv1.WhoAmIResponse) error {
				return writeWhoAmI(c.stdout, who)
			})
		},
	}
}

// writeWhoAmI shows the principal, then its bindings as a table.
func writeWhoAmI(w io.Writer, who *ledgerv1.WhoAmIResponse) error {
	t := newTable(w)
	row(t, "principal", formatText(who.GetPrincipal()))
	if err := t.Flush(); err != nil {
		return err
	}
	if len(who.GetBindings()) == 0 {
		if who.GetPrincipal() == "anonymous" {
			fmt.Fprintln(w, "\nno role bindings: this ledgerd runs without authentication (every call is allowed)")
		} else {
			fmt.Fprintln(w, "\nno role bindings: this principal may call whoami only")
		}
		return nil
	}
	fmt.Fprintln(w)
	t = newTable(w)
	row(t, "ROLE", "NAMESPACE_PATTERN", "GRANTED_AT", "GRANTED_BY")
	for _, b := range who.GetBindings() {
		row(t, roleName(b.GetRole()), formatText(b.GetNamespacePattern()), formatTime(b.GetCreatedAt()), formatText(b.GetCreatedBy()))
	}
	return t.Flush()
}

func tokensCommand() *command {
	return &command{
		name:    "tokens",
		summary: "List, create and revoke API tokens (platform admins only). A token\nauthenticates as its principal; what the principal may do is in its role\nbindings ('ledgerctl roles').",
		subcommands: "  list                       list the tokens, revoked and expired ones included\n" +
			"  create --principal P --reason R [--description D] [--ttl 90d]\n" +
			"                             issue a token; it is printed this once only\n" +
			"  revoke ID --reason R       revoke a token\n",
	}
}

func tokensListCommand() *command {
	return &command{
		name:    "tokens list",
		maxArgs: 0,
		summary: "List the API tokens, oldest first, revoked and expired ones included\n(LedgerAdminService.ListTokens). Their secrets are never shown: ledgerd keeps\nonly a hash of each.",
		details: "STATUS is active, expired (by this machine's clock) or revoked. LAST_USED_AT is\n" +
			"when the token last authenticated a call (each ledgerd writes it at every\n" +
			"credential refresh, 5s unless configured; - if never): once it stops moving,\n" +
			"a rotated token is no longer used and can be revoked.\n\n" +
			"-o json prints one Token per line.\n\n" +
			"Exit codes: 7 not a platform admin (PERMISSION_DENIED).",
		run: func(ctx context.Context, c *cli, _ []string) error {
			var listedAt time.Time // STATUS is as of then
			tokens := listing[*ledgerv1.Token]{
				noun:   "tokens",
				header: tokensHeader,
				row:    func(token *ledgerv1.Token) []string { return tokenRow(token, listedAt) },
			}
			return tokens.writeUnpaged(ctx, c, func(ctx context.Context) ([]*ledgerv1.Token, error) {
				response, err := c.client.Admin().ListTokens(ctx, &ledgerv1.ListTokensRequest{})
				listedAt = time.Now()
				return response.GetTokens(), err
			})
		},
	}
}

// tokensHeader and tokenRow are the columns of `tokens list`; a token's
// STATUS is as of now.
var tokensHeader = []string{"ID", "PRINCIPAL", "STATUS", "EXPIRES_AT", "LAST_USED_AT", "CREATED_AT", "CREATED_BY", "REVOKED_AT", "REVOKED_BY", "DESCRIPTION"}

func tokenRow(token *ledgerv1.Token, now time.Time) []string {
	return []string{
		token.GetId(), formatText(token.GetPrincipal()), tokenStatus(token, now),
		formatTime(token.GetExpiresAt()), formatTime(token.GetLastUsedAt()),
		formatTime(token.GetCreatedAt()), formatText(token.GetCreatedBy()),
		formatTime(token.GetRevokedAt()), formatText(token.GetRevokedBy()),
		formatText(token.GetDescription()),
	}
}

// tokenStatus says whether a token still works: active, expired or revoked.
func tokenStatus(token *ledgerv1.Token, now time.Time) string {
	switch {
	case token.GetRevokedAt() != nil:
		return "revoked"
	case token.GetExpiresAt() != nil && !now.Before(token.GetExpiresAt().AsTime()):
		return "expired"
	}
	return "active"
}

func tokensCreateCommand() *command {
	var (
		principal, description, reason string
		ttl                            durationFlag
	)
	return &command{
		name:    "tokens create",
		maxArgs: 0,
		summary: "Issue an API token for a principal (LedgerAdminService.CreateToken). The token\nis printed on stdout this once only: ledgerd keeps only a hash of it. Audited\nwith your identity and --reason.",
		details: "The new token authenticates as --principal at once; grant the principal a role\n" +
			"('ledgerctl roles grant') for it to be allowed anything but whoami. Without\n" +
			"--ttl it works for the server's maximum token lifetime (90 days unless\n" +
			"ledgerd's --max-token-ttl says otherwise; a longer --ttl is refused, exit 6).\n" +
			"stdout holds the token and nothing else, so that it can go straight into a\n" +
			"file or a secret store:\n" +
			"  ledgerctl tokens create --principal svc-billing --ttl 90d --reason \"billing workers\" > token\n\n" +
			"A token creation is sent once, never retried: if ledgerctl cannot tell whether\n" +
			"it happened (exit 5), look with 'ledgerctl tokens list' and revoke a token\n" +
			"that nobody received.\n\n" +
			"-o json prints the CreateTokenResponse: {\"token\":{...},\"secret\":\"ldg_...\"}.\n\n" +
			"Exit codes: 6 a field out of bounds; 7 not a platform admin.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&principal, "principal", "", "`NAME` the token authenticates as, e.g. svc-billing or alice@example.com\n(required)")
			fs.StringVar(&description, "description", "", "`TEXT` saying where the token is used")
			fs.Var(&ttl, "ttl", "`DURATION` the token works for (90s, 12h, 90d); default: the server's maximum")
			reasonFlag(fs, &reason)
		},
		run: func(ctx context.Context, c *cli, _ []string) error {
			if strings.TrimSpace(principal) == "" {
				return usageErrorf("--principal is required")
			}
			if err := requireReason(reason); err != nil {
				return err
			}
			request := &ledgerv1.CreateTokenRequest{Principal: principal, Description: description, Reason: reason}
			if ttl.d > 0 {
				request.Ttl = durationpb.New(ttl.d)
			}
			var token *ledgerv1.Token
			err := callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.CreateTokenResponse, error) {
				response, err := c.client.Admin().CreateToken(ctx, request)
				token = response.GetToken()
				return response, err
			}, func(response *ledgerv1.CreateTokenResponse) error {
				_, err := fmt.Fprintln(c.stdout, response.GetSecret())
				return err
			})
			if err != nil {
				return err
			}
			lifetime := "works until revoked"
			if token.GetExpiresAt() != nil {
				lifetime = "expires at " + formatTime(token.GetExpiresAt())
			}
			fmt.Fprintf(c.stderr, "ledgerctl tokens create: created token %s for %s; it %s.\n"+
				"WARNING: store the token now: it cannot be shown again (ledgerd keeps only a\n"+
				"hash of it). Lost, it can only be revoked and replaced.\n",
				token.GetId(), formatText(token.GetPrincipal()), lifetime)
			return nil
		},
	}
}

func tokensRevokeCommand() *command {
	var reason string
	return &command{
		name:    "tokens revoke",
		args:    "ID",
		minArgs: 1, maxArgs: 1,
		summary: "Revoke an API token by its ID (LedgerAdminService.RevokeToken): the ledgerd that\nanswers refuses it at once, every other replica within its credential refresh\ninterval (5s unless configured). Audited with your identity and --reason. Safe\nto repeat.",
		details: "The ID is the first column of 'ledgerctl tokens list', and the part of the\n" +
			"token between \"ldg_\" and the next \"_\".\n\n" +
			"-o json prints the RevokeTokenResponse.\n\n" +
			"Exit codes: 3 unknown token; 7 not a platform admin.",
		flags: func(fs *flag.FlagSet) {
			reasonFlag(fs, &reason)
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.RevokeTokenResponse, error) {
				return c.client.Admin().RevokeToken(ctx, &ledgerv1.RevokeTokenRequest{Id: args[0], Reason: reason})
			}, func(response *ledgerv1.RevokeTokenResponse) error {
				token := response.GetToken()
				fmt.Fprintf(c.stdout, "revoked token %s of %s: every ledgerd refuses it within its credential refresh interval\n\n",
					token.GetId(), formatText(token.GetPrincipal()))
				return writeToken(c.stdout, token, time.Now())
			})
		},
	}
}

// writeToken shows a token (never its secret) as key/value lines.
func writeToken(w io.Writer, token *ledgerv1.Token, now time.Time) error {
	t := newTable(w)
	row(t, "id", token.GetId())
	row(t, "principal", formatText(token.GetPrincipal()))
	row(t, "status", tokenStatus(token, now))
	row(t, "description", formatText(token.GetDescription()))
	row(t, "created_at", formatTime(token.GetCreatedAt()))
	row(t, "created_by", formatText(token.GetCreatedBy()))
	row(t, "expires_at", formatTime(token.GetExpiresAt()))
	row(t, "last_used_at", formatTime(token.GetLastUsedAt()))
	row(t, "revoked_at", formatTime(token.GetRevokedAt()))
	row(t, "revoked_by", formatText(token.GetRevokedBy()))
	return t.Flush()
}

func rolesCommand() *command {
	return &command{
		name:    "roles",
		summary: "List, grant and revoke role bindings (platform admins only). A binding gives a\nprincipal a role in the namespaces a pattern matches.",
		details: "Roles:\n" + roleHelp,
		subcommands: "  list                       list the role bindings\n" +
			"  grant PRINCIPAL ROLE PATTERN --reason R\n" +
			"                             give PRINCIPAL the role in the namespaces PATTERN matches\n" +
			"  revoke PRINCIPAL ROLE PATTERN --reason R\n" +
			"                             remove a binding\n",
	}
}

// roleHelp describes the roles and the patterns.
const roleHelp = "  worker          Reserve, Heartbeat, Complete, Fail, Release and Lookup: pipelines\n" +
	"  reader          Lookup, listings, histories and events (get, list, history,\n" +
	"                  events, namespaces show): auditors\n" +
	"  admin           what a reader may, and release, reset, purge, namespaces\n" +
	"                  create and set\n" +
	"  platform-admin  everything in every namespace, tokens and roles (PATTERN \"*\")\n" +
	"A PATTERN is a namespace name, a prefix followed by \"*\" (\"payments-*\"), or \"*\"\n" +
	"for every namespace. Quote it, so that the shell leaves the \"*\" alone."

func rolesListCommand() *command {
	return &command{
		name:    "roles list",
		maxArgs: 0,
		summary: "List every role binding, by principal (LedgerAdminService.ListRoleBindings).",
		details: "-o json prints one RoleBinding per line.\n\n" +
			"Exit codes: 7 not a platform admin (PERMISSION_DENIED).",
		run: func(ctx context.Context, c *cli, _ []string) error {
			bindings := listing[*ledgerv1.RoleBinding]{noun: "role bindings", header: bindingsHeader, row: bindingRow}
			return bindings.writeUnpaged(ctx, c, func(ctx context.Context) ([]*ledgerv1.RoleBinding, error) {
				response, err := c.client.Admin().ListRoleBindings(ctx, &ledgerv1.ListRoleBindingsRequest{})
				return response.GetBindings(), err
			})
		},
	}
}

// bindingsHeader and bindingRow are the columns of `roles list`.
var bindingsHeader = []string{"PRINCIPAL", "ROLE", "NAMESPACE_PATTERN", "GRANTED_AT", "GRANTED_BY"}

func bindingRow(b *ledgerv1.RoleBinding) []string {
	return []string{
		formatText(b.GetPrincipal()), roleName(b.GetRole()), formatText(b.GetNamespacePattern()),
		formatTime(b.GetCreatedAt()), formatText(b.GetCreatedBy()),
	}
}

func rolesGrantCommand() *command {
	var reason string
	return &command{
		name:    "roles grant",
		args:    "PRINCIPAL ROLE PATTERN",
		minArgs: 3, maxArgs: 3,
		summary: "Give PRINCIPAL a role in the namespaces PATTERN matches\n(LedgerAdminService.GrantRole). The ledgerd that answers applies it at once,\nevery other replica within its credential refresh interval (5s unless\nconfigured). Audited with your identity and --reason. Granting again changes\nnothing.",
		details: "Roles:\n" + roleHelp + "\n\n" +
			"Example: ledgerctl roles grant svc-billing worker 'billing-*' --reason \"billing pipeline\"\n\n" +
			"-o json prints the GrantRoleResponse.\n\n" +
			"Exit codes: 6 a bad principal or pattern (platform-admin needs \"*\"); 7 not a\n" +
			"platform admin.",
		flags: func(fs *flag.FlagSet) {
			reasonFlag(fs, &reason)
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			binding, err := bindingArgs(args)
			if err != nil {
				return err
			}
			if err := requireReason(reason); err != nil {
				return err
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.GrantRoleResponse, error) {
				return c.client.Admin().GrantRole(ctx, &ledgerv1.GrantRoleRequest{Binding: binding, Reason: reason})
			}, func(response *ledgerv1.GrantRoleResponse) error {
				b := response.GetBinding()
				fmt.Fprintf(c.stdout, "%s is %s in %s (granted by %s at %s)\n", formatText(b.GetPrincipal()), roleName(b.GetRole()),
					formatText(b.GetNamespacePattern()), formatText(b.GetCreatedBy()), formatTime(b.GetCreatedAt()))
				return nil
			})
		},
	}
}

func rolesRevokeCommand() *command {
	var reason string
	return &command{
		name:    "roles revoke",
		args:    "PRINCIPAL ROLE PATTERN",
		minArgs: 3, maxArgs: 3,
		summary: "Remove a role binding (LedgerAdminService.RevokeRole): PRINCIPAL, ROLE and\nPATTERN as 'ledgerctl roles list' shows them. The ledgerd that answers applies\nit at once, every other replica within its credential refresh interval.\nAudited with your identity and --reason.",
		details: "A revocation is sent once, never retried: if ledgerctl cannot tell whether it\n" +
			"happened (exit 5), look with 'ledgerctl roles list'.\n\n" +
			"-o json prints the RevokeRoleResponse ({}).\n\n" +
			"Exit codes: 3 no such binding; 7 not a platform admin.",
		flags: func(fs *flag.FlagSet) {
			reasonFlag(fs, &reason)
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			binding, err := bindingArgs(args)
			if err != nil {
				return err
			}
			if err := requireReason(reason); err != nil {
				return err
			}
			return callAndShow(ctx, c, func(ctx context.Context) (*ledgerv1.RevokeRoleResponse, error) {
				return c.client.Admin().RevokeRole(ctx, &ledgerv1.RevokeRoleRequest{Binding: binding, Reason: reason})
			}, func(*ledgerv1.RevokeRoleResponse) error {
				fmt.Fprintf(c.stdout, "%s is no longer %s in %s\n", formatText(binding.GetPrincipal()), roleName(binding.GetRole()),
					formatText(binding.GetNamespacePattern()))
				return nil
			})
		},
	}
}

// bindingArgs reads PRINCIPAL ROLE PATTERN.
func bindingArgs(args []string) (*ledgerv1.RoleBinding, error) {
	role, err := parseRole(args[1])
	if err != nil {
		return nil, err
	}
	return &ledgerv1.RoleBinding{Principal: args[0], Role: role, NamespacePattern: args[2]}, nil
}

// parseRole reads a role as typed: "worker", "platform-admin",
// "ROLE_PLATFORM_ADMIN".
func parseRole(s string) (ledgerv1.Role, error) {
	name := strings.TrimPrefix(enumName(s), "ROLE_")
	value, ok := ledgerv1.Role_value["ROLE_"+name]
	if !ok || value == int32(ledgerv1.Role_ROLE_UNSPECIFIED) {
		return 0, usageErrorf("unknown role %q; want worker, reader, admin or platform-admin", s)
	}
	return ledgerv1.Role(value), nil
}

// roleName is a role as ledgerctl reads it: worker, platform-admin...
func roleName(r ledgerv1.Role) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_")), "_", "-")
}
