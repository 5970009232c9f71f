// The version of the package, the one version ledgerd and its three clients
// share (the repository's VERSION file; `make set-version` writes it here,
// and a test checks that every package says the same).

/** The version of this package, e.g. "0.1.0"; it is sent in the user agent `ledgerd-typescript/<VERSION>`. */
export const VERSION = "0.1.0";
