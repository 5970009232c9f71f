package ledger

// QueryText exposes the embedded statements to the external tests (query
// plans).
var QueryText = query
