// gcp-server: go-control-plane's xDS server, the reference of the fleet-scale benchmark of issue 12
// (benchmarks/fleet_scale.py). It serves the resources of a JSON-lines file (serialized by this project's
// own snapshot, so both servers send the same resources) over ADS, SotW and delta, from either
//
//   - `-cache linear`: one LinearCache per type behind a MuxCache keyed by type URL (go-control-plane's
//     fastest SotW setup; one set of resources for every node), or
//   - `-cache snapshot`: a SnapshotCache holding the same snapshot for each node group "group-0".."group-<G-1>"
//     (nodes hashed by node.cluster, as xds-load names them).
//
// The stdin/stdout line protocol is described in tools/testbin/README.md.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// The four types the benchmark serves, in a fixed order.
var typeURLs = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

func newMessage(typeURL string) (proto.Message, bool) {
	switch typeURL {
	case resourcev3.ClusterType:
		return &cluster.Cluster{}, true
	case resourcev3.EndpointType:
		return &endpoint.ClusterLoadAssignment{}, true
	case resourcev3.ListenerType:
		return &listener.Listener{}, true
	case resourcev3.RouteType:
		return &route.RouteConfiguration{}, true
	}
	return nil, false
}

type line struct {
	TypeURL string `json:"type_url"`
	Name    string `json:"name"`
	Body    string `json:"body"`
}

// readResources reads the JSON-lines file: type URL -> name -> resource.
func readResources(path string) (map[string]map[string]types.Resource, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	out := map[string]map[string]types.Resource{}
	count := 0
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<30)
	for lineNo := 1; scanner.Scan(); lineNo++ {
		text := strings.TrimSpace(scanner.Text())
		if text == "" {
			continue
		}
		var l line
		if err := json.Unmarshal([]byte(text), &l); err != nil {
			return nil, 0, fmt.Errorf("%s:%d: %w", path, lineNo, err)
		}
		msg, ok := newMessage(l.TypeURL)
		if !ok {
			return nil, 0, fmt.Errorf("%s:%d: type_url %q is not one of %v", path, lineNo, l.TypeURL, typeURLs)
		}
		body, err := base64.StdEncoding.DecodeString(l.Body)
		if err != nil {
			return nil, 0, fmt.Errorf("%s:%d: body: %w", path, lineNo, err)
		}
		if err := proto.Unmarshal(body, msg); err != nil {
			return nil, 0, fmt.Errorf("%s:%d: body is not a %s: %w", path, lineNo, l.TypeURL, err)
		}
		if got := cachev3.GetResourceName(msg); got != l.Name {
			return nil, 0, fmt.Errorf("%s:%d: name %q differs from the resource's own name %q", path, lineNo, l.Name, got)
		}
		if out[l.TypeURL] == nil {
			out[l.TypeURL] = map[string]types.Resource{}
		}
		out[l.TypeURL][l.Name] = msg
		count++
	}
	return out, count, scanner.Err()
}

// groupHash keys the snapshot cache by node.cluster, the node group xds-load assigns.
type groupHash struct{}

func (groupHash) ID(node *core.Node) string { return node.GetCluster() }

// backend applies the resources to one of the two cache setups.
type backend interface {
	cache() cachev3.Cache
	apply(changes map[string]map[string]types.Resource) error
}

type linearBackend struct {
	mux    *cachev3.MuxCache
	byType map[string]*cachev3.LinearCache
}

func newLinear(initial map[string]map[string]types.Resource) *linearBackend {
	b := &linearBackend{byType: map[string]*cachev3.LinearCache{}}
	caches := map[string]cachev3.Cache{}
	for _, t := range typeURLs {
		c := cachev3.NewLinearCache(t, cachev3.WithInitialResources(initial[t]))
		b.byType[t] = c
		caches[t] = c
	}
	b.mux = &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        caches,
	}
	return b
}

func (b *linearBackend) cache() cachev3.Cache { return b.mux }

func (b *linearBackend) apply(changes map[string]map[string]types.Resource) error {
	for t, resources := range changes {
		if err := b.byType[t].UpdateResources(resources, nil); err != nil {
			return fmt.Errorf("updating the %s cache: %w", t, err)
		}
	}
	return nil
}

type snapshotBackend struct {
	snapshots cachev3.SnapshotCache
	groups    int
	current   map[string]map[string]types.Resource
	version   int
}

func newSnapshot(initial map[string]map[string]types.Resource, groups int) (*snapshotBackend, error) {
	b := &snapshotBackend{
		snapshots: cachev3.NewSnapshotCache(false, groupHash{}, nil),
		groups:    groups,
		current:   map[string]map[string]types.Resource{},
	}
	for _, t := range typeURLs {
		b.current[t] = map[string]types.Resource{}
	}
	return b, b.apply(initial)
}

func (b *snapshotBackend) cache() cachev3.Cache { return b.snapshots }

func (b *snapshotBackend) apply(changes map[string]map[string]types.Resource) error {
	for t, resources := range changes {
		for name, r := range resources {
			b.current[t][name] = r
		}
	}
	b.version++
	all := map[resourcev3.Type][]types.Resource{}
	for t, resources := range b.current {
		for _, r := range resources {
			all[t] = append(all[t], r)
		}
	}
	snapshot, err := cachev3.NewSnapshot(fmt.Sprintf("v%d", b.version), all)
	if err != nil {
		return err
	}
	for g := range b.groups {
		if err := b.snapshots.SetSnapshot(context.Background(), fmt.Sprintf("group-%d", g), snapshot); err != nil {
			return err
		}
	}
	return nil
}

var outMu sync.Mutex

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gcp-server: "+format+"\n", args...)
	os.Exit(1)
}

func moduleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "unknown"
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println("gcp-server go-control-plane", moduleVersion("github.com/envoyproxy/go-control-plane"),
			"grpc-go", moduleVersion("google.golang.org/grpc"))
		return
	}
	port := flag.Int("port", 0, "port to listen on at 127.0.0.1 (0: pick one; printed)")
	resources := flag.String("resources", "", "JSON-lines resource file (required)")
	cacheKind := flag.String("cache", "linear", "linear (LinearCache per type behind a MuxCache) or snapshot")
	groups := flag.Int("groups", 1, `snapshot cache: node groups "group-0".."group-<G-1>" (node.cluster)`)
	flag.Parse()
	if *resources == "" || (*cacheKind != "linear" && *cacheKind != "snapshot") || *groups < 1 {
		fmt.Fprintln(os.Stderr, "usage: gcp-server -resources FILE [-port P] [-cache linear|snapshot] [-groups G]")
		os.Exit(2)
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	initial, _, err := readResources(*resources)
	if err != nil {
		fail("reading -resources: %v", err)
	}
	var b backend
	if *cacheKind == "linear" {
		b = newLinear(initial)
	} else if b, err = newSnapshot(initial, *groups); err != nil {
		fail("building the snapshot: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	xds := serverv3.NewServer(ctx, b.cache(), serverv3.CallbackFuncs{})
	// As go-control-plane's own example server (internal/example/server.go of v0.14.0).
	grpcServer := grpc.NewServer(
		grpc.MaxConcurrentStreams(1000000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
	)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(grpcServer, xds)
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fail("listen: %v", err)
	}
	go func() {
		if err := grpcServer.Serve(lis); err != nil {
			fmt.Fprintln(os.Stderr, "gcp-server: serve:", err)
		}
	}()
	emit(map[string]any{"event": "listening", "port": lis.Addr().(*net.TCPAddr).Port})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		switch {
		case fields[0] == "quit":
			grpcServer.Stop()
			return
		case fields[0] == "update" && len(fields) == 2:
			changes, n, err := readResources(fields[1])
			if err == nil {
				err = b.apply(changes)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "gcp-server: update:", err)
				emit(map[string]any{"event": "error", "message": err.Error()})
				continue
			}
			emit(map[string]any{"event": "updated", "n": n})
		default:
			fmt.Fprintf(os.Stderr, "gcp-server: unknown command %q (update FILE, quit)\n", in.Text())
		}
	}
	grpcServer.Stop()
}
