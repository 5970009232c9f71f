package ledgerclient

// Version is the version of this client, the same as ledgerd's and the
// other clients' of one release. The client sends it to ledgerd in its
// user agent, "ledgerd-go/<Version>", which ledgerd's request log shows.
const Version = "0.1.0"

// userAgent is the client's part of the gRPC user agent.
const userAgent = "ledgerd-go/" + Version
