package ledgerclient

import (
	"fmt"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // client-side health checking (healthCheckConfig)
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// serviceConfig balances calls round robin over every address of the
// target, and keeps calls away from an address whose grpc.health.v1 status
// (service "") is not SERVING: ledgerd reports NOT_SERVING while it drains.
// A server without the health service counts as serving.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""}
}`

// multiTargets numbers the resolvers of comma-separated targets, whose
// schemes must be unique within a process.
var multiTargets atomic.Int64

// NewMulti returns a Client for several ledgerd replicas, given by their
// addresses ("host:port"), as New does for "addr1,addr2". Calls are
// balanced round robin over the replicas that serve.
func NewMulti(addrs []string, opts ...Option) (*Client, error) {
	return New(strings.Join(addrs, ","), opts...)
}

// resolveTarget turns New's target into grpc.NewClient's: a single target
// is gRPC's own; several addresses separated by commas get a resolver of
// their own that lists them all.
func resolveTarget(target string) (string, []grpc.DialOption, error) {
	if !strings.Contains(target, ",") {
		return target, nil, nil
	}
	var addrs []resolver.Address
	for _, addr := range strings.Split(target, ",") {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		if strings.Contains(addr, "://") {
			return "", nil, fmt.Errorf("address %q: a list of replicas takes host:port addresses, not targets with a scheme", addr)
		}
		addrs = append(addrs, resolver.Address{Addr: addr})
	}
	if len(addrs) == 0 {
		return "", nil, fmt.Errorf("no address in %q", target)
	}
	r := manual.NewBuilderWithScheme(fmt.Sprintf("ledgerd-replicas-%d", multiTargets.Add(1)))
	r.InitialState(resolver.State{Addresses: addrs})
	return r.Scheme() + ":///replicas", []grpc.DialOption{grpc.WithResolvers(r)}, nil
}
