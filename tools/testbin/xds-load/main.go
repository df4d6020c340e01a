// xds-load: simulated Envoys for the fleet-scale benchmark of issue 12 (benchmarks/fleet_scale.py).
//
// Each simulated Envoy has its own grpc.ClientConn (its own TCP connection, as real Envoys) and runs ADS the
// way Envoy's cluster and listener managers do (docs/protocol.md): CDS wildcard, then EDS for the EDS
// clusters, then LDS wildcard once the clusters are warm, then RDS for the route names of the listeners'
// HttpConnectionManagers. Every response is ACKed, never NACKed. The stdin/stdout line protocol is described
// in tools/testbin/README.md.
//
// The client must not be the bottleneck of the benchmark, so what a response implies (the EDS names of a
// CDS response, the route names of an LDS response, the names an EDS/RDS response answers) is derived once
// per distinct response content and shared by every stream that receives the same bytes; a stream keeps
// only pointers to those shared, immutable results plus its versions and nonces.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

type xdsType int

const (
	cds xdsType = iota
	eds
	lds
	rds
	nTypes
)

var typeURLs = [nTypes]string{
	"type.googleapis.com/envoy.config.cluster.v3.Cluster",
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	"type.googleapis.com/envoy.config.listener.v3.Listener",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
}

var typeNames = [nTypes]string{"cds", "eds", "lds", "rds"}

const hcmTypeURL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

func typeOf(url string) (xdsType, bool) {
	for t, u := range typeURLs {
		if u == url {
			return xdsType(t), true
		}
	}
	return 0, false
}

// ---- output -------------------------------------------------------------------------------------------

var outMu sync.Mutex

func emit(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds-load: encoding output:", err)
		return
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "xds-load: "+format+"\n", args...) }

// percentiles in milliseconds (nearest rank), rounded to 0.1 ms.
func percentiles(d []time.Duration, into map[string]any) {
	if len(d) == 0 {
		into["p50_ms"], into["p99_ms"], into["max_ms"] = nil, nil, nil
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return math.Round(float64(s[max(i, 0)].Microseconds())/100) / 10
	}
	into["p50_ms"], into["p99_ms"], into["max_ms"] = rank(0.50), rank(0.99), rank(1.0)
}

// ---- errors -------------------------------------------------------------------------------------------

type errorCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorCounts) add(err error) {
	key := err.Error()
	if st, ok := status.FromError(err); ok {
		key = st.Code().String()
	} else if errors.Is(err, io.EOF) {
		key = "EOF"
	}
	e.mu.Lock()
	e.m[key]++
	e.mu.Unlock()
}

func (e *errorCounts) snapshot() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps(e.m)
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ---- what a response implies, derived once per distinct content -----------------------------------------

// derived is immutable once published and shared by every stream that received the same response.
type derived struct {
	// deps: sorted names of the dependent type to subscribe (CDS -> EDS names, LDS -> route names).
	deps []string
	// byRes (delta only): resource name -> its dependent names; the state a delta response is applied to.
	byRes map[string][]string
	// present (EDS, RDS): the names a response carries, to tell which subscribed names are answered.
	present map[string]struct{}
	// versions (delta only): resource name -> version held, sent as initial_resource_versions on a reconnect.
	versions map[string]string
}

type memoKey struct {
	t    xdsType
	prev *derived // delta: the state the response applies to; SotW: nil (a response is the whole state)
	h1   uint64
	h2   uint64
}

// memoEntry is published before it is built, so the streams that receive the same response at the same
// moment (a connect storm: every stream gets the first CDS response at once) wait for one derivation
// instead of each doing it.
// Counted for the stderr summary at exit: how many responses of each type arrived, and how many distinct
// derivations they needed (a server that resends unchanged state shows many responses, few derivations).
var (
	responsesByType [nTypes]atomic.Int64
	derivations     atomic.Int64
)

type memoEntry struct {
	done chan struct{}
	d    *derived
	err  error
}

var (
	memoMu    sync.Mutex
	memo      = map[memoKey]*memoEntry{}
	internMap = map[string][]string{}
	seed1     = maphash.MakeSeed()
)

// memoLimit bounds the cache; on overflow it starts over (streams keep their pointers, so nothing breaks).
const memoLimit = 10_000

// release is called as soon as the response's bytes are no longer needed: before waiting for another
// stream's derivation (so a storm of waiters does not pin a response buffer each), or after building.
func lookupOrDerive(k memoKey, release func(), build func() (*derived, error)) (*derived, error) {
	memoMu.Lock()
	e, ok := memo[k]
	if !ok {
		if len(memo) >= memoLimit {
			memo = map[memoKey]*memoEntry{}
			internMap = map[string][]string{}
		}
		e = &memoEntry{done: make(chan struct{})}
		memo[k] = e
	}
	memoMu.Unlock()
	if ok {
		release()
		<-e.done
		return e.d, e.err
	}
	derivations.Add(1)
	e.d, e.err = build()
	release()
	close(e.done)
	if e.err != nil {
		memoMu.Lock()
		delete(memo, k) // a malformed response is not remembered
		memoMu.Unlock()
	}
	return e.d, e.err
}

// intern returns one shared sorted slice per distinct name set (caller holds no lock).
func intern(names []string) []string {
	sort.Strings(names)
	names = slices.Compact(names)
	key := strings.Join(names, "\x00")
	memoMu.Lock()
	defer memoMu.Unlock()
	if s, ok := internMap[key]; ok {
		return s
	}
	internMap[key] = names
	return names
}

// clusterEDSName scans a serialized Cluster for name (1), type (2) and eds_cluster_config (3).service_name
// (2): the EDS resource an EDS cluster subscribes to, "" for other discovery types.
func clusterEDSName(b []byte) (name, edsName string, err error) {
	var discoveryType uint64
	var service string
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && wt == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			name, n = string(v), m
		case num == 2 && wt == protowire.VarintType:
			discoveryType, n = protowire.ConsumeVarint(b)
		case num == 3 && wt == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if s, e := stringField(v, 2); e == nil {
				service = s
			}
		default:
			n = protowire.ConsumeFieldValue(num, wt, b)
		}
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	const discoveryEDS = 3 // envoy.config.cluster.v3.Cluster.DiscoveryType.EDS
	if discoveryType != discoveryEDS {
		return name, "", nil
	}
	if service != "" {
		return name, service, nil
	}
	return name, name, nil
}

// stringField returns the first length-delimited field `field` of a serialized message.
func stringField(b []byte, field protowire.Number) (string, error) {
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
		if num == field && wt == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return "", protowire.ParseError(m)
			}
			return string(v), nil
		}
		n = protowire.ConsumeFieldValue(num, wt, b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return "", nil
}

// listenerRoutes decodes a Listener and the HttpConnectionManagers in it: its name and its RDS route names.
func listenerRoutes(b []byte) (string, []string, error) {
	var l listener.Listener
	if err := proto.Unmarshal(b, &l); err != nil {
		return "", nil, err
	}
	var routes []string
	addHCM := func(typeURL string, value []byte) error {
		if typeURL != hcmTypeURL {
			return nil
		}
		var m hcm.HttpConnectionManager
		if err := proto.Unmarshal(value, &m); err != nil {
			return err
		}
		if r := m.GetRds(); r != nil && r.GetRouteConfigName() != "" {
			routes = append(routes, r.GetRouteConfigName())
		}
		return nil
	}
	chains := l.GetFilterChains()
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			if tc := f.GetTypedConfig(); tc != nil {
				if err := addHCM(tc.GetTypeUrl(), tc.GetValue()); err != nil {
					return "", nil, err
				}
			}
		}
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		if err := addHCM(api.GetTypeUrl(), api.GetValue()); err != nil {
			return "", nil, err
		}
	}
	return l.GetName(), routes, nil
}

// depsOf: a resource's dependent names (the EDS name of an EDS cluster, a listener's route names).
func depsOf(t xdsType, value []byte) (string, []string, error) {
	switch t {
	case cds:
		name, edsName, err := clusterEDSName(value)
		if err != nil || edsName == "" {
			return name, nil, err
		}
		return name, []string{edsName}, nil
	case lds:
		return listenerRoutes(value)
	default:
		name, err := stringField(value, 1) // ClusterLoadAssignment.cluster_name, RouteConfiguration.name
		return name, nil, err
	}
}

func deriveSotw(t xdsType, raw *rawResponse, release func()) (*derived, error) {
	k := memoKey{t: t, h1: raw.h1, h2: raw.h2}
	return lookupOrDerive(k, release, func() (*derived, error) {
		var resp discovery.DiscoveryResponse
		if err := proto.Unmarshal(raw.bytes, &resp); err != nil {
			return nil, fmt.Errorf("decoding a %s response: %w", typeNames[t], err)
		}
		d := &derived{}
		var all []string
		if t == eds || t == rds {
			d.present = make(map[string]struct{}, len(resp.GetResources()))
		}
		for _, r := range resp.GetResources() {
			name, deps, err := depsOf(t, r.GetValue())
			if err != nil {
				return nil, fmt.Errorf("decoding a %s resource: %w", typeNames[t], err)
			}
			all = append(all, deps...)
			if d.present != nil {
				d.present[name] = struct{}{}
			}
		}
		if t == cds || t == lds {
			d.deps = intern(all)
		}
		return d, nil
	})
}

func deriveDelta(t xdsType, prev *derived, raw *rawResponse, release func()) (*derived, error) {
	k := memoKey{t: t, prev: prev, h1: raw.h1, h2: raw.h2}
	return lookupOrDerive(k, release, func() (*derived, error) {
		var resp discovery.DeltaDiscoveryResponse
		if err := proto.Unmarshal(raw.bytes, &resp); err != nil {
			return nil, fmt.Errorf("decoding a %s delta response: %w", typeNames[t], err)
		}
		d := &derived{versions: make(map[string]string)}
		if prev != nil {
			for k, v := range prev.versions {
				d.versions[k] = v
			}
		}
		for _, n := range resp.GetRemovedResources() {
			delete(d.versions, n)
		}
		for _, r := range resp.GetResources() {
			d.versions[r.GetName()] = r.GetVersion()
		}
		if t == eds || t == rds {
			d.present = make(map[string]struct{}, len(resp.GetResources()))
			for _, r := range resp.GetResources() {
				d.present[r.GetName()] = struct{}{}
			}
			return d, nil
		}
		d.byRes = make(map[string][]string)
		if prev != nil {
			for k, v := range prev.byRes {
				d.byRes[k] = v
			}
		}
		for _, n := range resp.GetRemovedResources() {
			delete(d.byRes, n)
		}
		for _, r := range resp.GetResources() {
			if r.GetResource() == nil {
				continue
			}
			_, deps, err := depsOf(t, r.GetResource().GetValue())
			if err != nil {
				return nil, fmt.Errorf("decoding %s resource %q: %w", typeNames[t], r.GetName(), err)
			}
			d.byRes[r.GetName()] = deps
		}
		var all []string
		for _, v := range d.byRes {
			all = append(all, v...)
		}
		d.deps = intern(all)
		return d, nil
	})
}

// ---- responses as raw bytes ---------------------------------------------------------------------------------

// rawCodec marshals requests as protobuf but hands responses over as bytes: a stream only scans the few
// top-level fields it needs (type, version, nonce) and hashes the resources; the full decode happens once
// per distinct content, in lookupOrDerive.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (rawCodec) Unmarshal(data []byte, v any) error {
	// grpc-go recycles `data` after this returns, so the bytes are copied. Not into a pooled buffer: a pool
	// would keep one largest-response-sized buffer per concurrently receiving stream alive after the storm.
	*v.(*[]byte) = slices.Clone(data)
	return nil
}
func (rawCodec) Name() string { return "proto" } // the content-subtype on the wire stays application/grpc+proto

type rawResponse struct {
	bytes                   []byte
	typeURL, version, nonce string
	resources               int
	h1, h2                  uint64
}

// scanResponse reads a serialized DiscoveryResponse or DeltaDiscoveryResponse: version (field 1, SotW
// version_info / delta system_version_info), type_url (4), nonce (5). The key covers the resources (2) and,
// for delta, removed_resources (6) and removed_resource_names (8): everything but the per-stream nonce and
// the version, i.e. what decides what the response implies. It does not depend on the order of the
// resources (go-control-plane's caches emit them in map order, so two streams get the same set in
// different orders): each entry's hash is summed, and so is its square.
func scanResponse(b []byte, delta bool) (rawResponse, error) {
	r := rawResponse{bytes: b}
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
		if wt != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, wt, b)
			if n < 0 {
				return r, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return r, protowire.ParseError(m)
		}
		b = b[m:]
		switch {
		case num == 1:
			r.version = string(v)
		case num == 4:
			r.typeURL = string(v)
		case num == 5:
			r.nonce = string(v)
		case num == 2 || (delta && (num == 6 || num == 8)):
			if num == 2 {
				r.resources++
			}
			h := maphash.Bytes(seed1, v) ^ uint64(num)*0x9e3779b97f4a7c15
			r.h1 += h
			r.h2 += h * h
		}
	}
	return r, nil
}

const (
	adsService  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
	sotwMethod  = adsService + "StreamAggregatedResources"
	deltaMethod = adsService + "DeltaAggregatedResources"
)

var adsDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// recv receives one response, scanned; release() drops the stream's reference to its bytes once it is
// processed (so a stream waiting on another's derivation does not pin them).
func recv(ads grpc.ClientStream, delta bool) (*rawResponse, func(), error) {
	var buf []byte
	if err := ads.RecvMsg(&buf); err != nil {
		return nil, nil, err
	}
	r, err := scanResponse(buf, delta)
	if err != nil {
		return nil, nil, fmt.Errorf("malformed response: %w", err)
	}
	return &r, func() { r.bytes = nil }, nil
}

// ---- marks: time from T0 until each stream ACKs a changed response of one type ------------------------

type markState struct {
	mu     sync.Mutex
	gen    int64
	typ    xdsType
	t0     time.Time
	times  []time.Duration
	notify chan struct{}
}

var mark = &markState{notify: make(chan struct{}, 1)}

func (m *markState) record(gen int64, at time.Time) {
	m.mu.Lock()
	if gen == m.gen {
		m.times = append(m.times, at.Sub(m.t0))
	}
	m.mu.Unlock()
	poke(m.notify)
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ---- one simulated Envoy ---------------------------------------------------------------------------------

type config struct {
	server   string
	delta    bool
	retry    bool
	idPrefix string
	groups   int
}

type fleet struct {
	cfg       config
	errs      errorCounts
	live      atomic.Int64
	synced    atomic.Int64
	gaveUp    atomic.Int64
	syncMu    sync.Mutex
	syncTimes []time.Duration
	syncPoke  chan struct{}
	streams   []*stream
}

type stream struct {
	f     *fleet
	index int
	node  *core.Node
	start time.Time

	// Per attempt; written by the stream's goroutine. mu guards what `mark` reads and writes.
	mu       sync.Mutex
	version  [nTypes]string
	nonce    [nTypes]string
	acked    [nTypes]bool
	state    [nTypes]*derived // CDS, LDS: the shared derivation of what the stream holds
	subs     [nTypes][]string // EDS, RDS: subscribed names (a shared slice)
	pending  [nTypes][]string // EDS, RDS: subscribed names not answered yet
	asked    [nTypes]bool
	isSynced bool
	markGen  int64
	markBase string
	markDone bool
}

// reset prepares a new attempt (-retry). Like Envoy after a reconnect, the stream keeps what it holds --
// versions, delta resource versions, subscriptions -- and re-requests every type it watched (firstRequests);
// only the nonces belong to the old stream (docs/protocol.md).
func (s *stream) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nonce = [nTypes]string{}
}

// resumeOrder: the types re-requested on a new stream, CDS first (it carries the node).
var resumeOrder = [nTypes]xdsType{cds, eds, lds, rds}

func (s *stream) firstRequestsSotw(ads grpc.ClientStream) error {
	node := s.node // the node goes in the first request only (Envoy's set_node_on_first_message_only)
	for _, t := range resumeOrder {
		if t != cds && !s.asked[t] {
			continue
		}
		s.asked[t] = true
		req := &discovery.DiscoveryRequest{
			Node: node, TypeUrl: typeURLs[t], VersionInfo: s.version[t], ResourceNames: s.subs[t],
		}
		if err := ads.SendMsg(req); err != nil {
			return err
		}
		node = nil
	}
	return nil
}

func (s *stream) firstRequestsDelta(ads grpc.ClientStream) error {
	node := s.node
	for _, t := range resumeOrder {
		if t != cds && !s.asked[t] {
			continue
		}
		s.asked[t] = true
		req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURLs[t], ResourceNamesSubscribe: s.subs[t]}
		if st := s.state[t]; st != nil {
			req.InitialResourceVersions = st.versions // shared and read-only: marshalling does not modify it
		}
		if err := ads.SendMsg(req); err != nil {
			return err
		}
		node = nil
	}
	return nil
}

func (s *stream) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	s.start = time.Now()
	conn, err := grpc.NewClient(s.f.cfg.server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		s.f.errs.add(err)
		s.giveUp()
		return
	}
	defer conn.Close()
	backoff := 100 * time.Millisecond
	for {
		s.reset()
		if s.f.cfg.delta {
			err = s.runDelta(ctx, conn)
		} else {
			err = s.runSotw(ctx, conn)
		}
		if ctx.Err() != nil {
			return
		}
		s.f.errs.add(err)
		code := status.Code(err)
		if !s.f.cfg.retry || (code != codes.Unavailable && code != codes.ResourceExhausted) {
			logf("stream %d ended: %v", s.index, err)
			s.giveUp()
			return
		}
		// Jittered exponential backoff, 0.1 s to 1 s (issue 12: clients told to retry come back spread out).
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (s *stream) giveUp() {
	s.f.gaveUp.Add(1)
	poke(s.f.syncPoke)
	poke(mark.notify)
}

// after an ACK of type t was sent: mark bookkeeping and the sync check.
func (s *stream) afterAck(t xdsType, changed bool, gen int64) {
	if changed {
		mark.record(gen, time.Now())
	}
	if s.isSynced {
		return
	}
	for _, a := range s.acked {
		if !a {
			return
		}
	}
	if len(s.pending[eds]) > 0 || len(s.pending[rds]) > 0 {
		return
	}
	s.isSynced = true
	s.f.synced.Add(1)
	s.f.syncMu.Lock()
	s.f.syncTimes = append(s.f.syncTimes, time.Since(s.start))
	s.f.syncMu.Unlock()
	poke(s.f.syncPoke)
}

// noteResponse records the version of a response about to be ACKed and whether it completes the current
// mark for this stream (a changed version for SotW, any resource for delta).
func (s *stream) noteResponse(t xdsType, version string, carries bool) (bool, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	mark.mu.Lock()
	gen, typ := mark.gen, mark.typ
	mark.mu.Unlock()
	if s.markGen == gen && gen > 0 && !s.markDone && typ == t {
		if s.f.cfg.delta {
			changed = carries
		} else {
			changed = version != s.markBase
		}
		s.markDone = changed
	}
	s.version[t] = version
	s.acked[t] = true
	return changed, gen
}

// answer removes from pending the names a response carries; shares the slice when nothing is answered.
func answer(pending []string, present map[string]struct{}) []string {
	if len(pending) == 0 {
		return nil
	}
	var rest []string
	for i, n := range pending {
		if _, ok := present[n]; ok {
			if rest == nil {
				rest = make([]string, 0, len(pending)-1)
				rest = append(rest, pending[:i]...)
			}
			continue
		}
		if rest != nil {
			rest = append(rest, n)
		}
	}
	if rest == nil {
		return pending // nothing answered
	}
	if len(rest) == 0 {
		return nil
	}
	return rest
}

// resubscribe: the pending names after the subscription of a type changes from old to new.
func resubscribe(oldSubs, oldPending, newSubs []string) []string {
	if len(oldSubs) == 0 {
		return newSubs
	}
	was := make(map[string]bool, len(oldSubs))
	for _, n := range oldSubs {
		was[n] = true
	}
	for _, n := range oldPending {
		was[n] = false
	}
	var pending []string
	for _, n := range newSubs {
		if answered, ok := was[n]; !ok || !answered {
			pending = append(pending, n)
		}
	}
	return pending
}

func diff(a, b []string) (added, removed []string) {
	inA := make(map[string]struct{}, len(a))
	for _, n := range a {
		inA[n] = struct{}{}
	}
	inB := make(map[string]struct{}, len(b))
	for _, n := range b {
		inB[n] = struct{}{}
		if _, ok := inA[n]; !ok {
			added = append(added, n)
		}
	}
	for _, n := range a {
		if _, ok := inB[n]; !ok {
			removed = append(removed, n)
		}
	}
	return added, removed
}

// derive: what the response implies, or (SotW) nil for an EDS/RDS response when no subscribed name awaits
// an answer (the common case after sync: nothing to derive, and nothing added to the memo per change).
// Delta streams always derive: the state carries the resource versions for a reconnect.
func (s *stream) derive(t xdsType, release func(), build func() (*derived, error)) (*derived, error) {
	responsesByType[t].Add(1)
	if !s.f.cfg.delta && (t == eds || t == rds) && len(s.pending[t]) == 0 {
		release()
		return nil, nil
	}
	return build()
}

// dependent: CDS drives EDS, LDS drives RDS.
var dependent = map[xdsType]xdsType{cds: eds, lds: rds}

func (s *stream) runSotw(ctx context.Context, conn *grpc.ClientConn) error {
	ads, err := conn.NewStream(ctx, adsDesc, sotwMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	s.f.live.Add(1)
	defer s.f.live.Add(-1)
	request := func(t xdsType) error {
		s.asked[t] = true
		return ads.SendMsg(&discovery.DiscoveryRequest{
			TypeUrl: typeURLs[t], VersionInfo: s.version[t], ResponseNonce: s.nonce[t], ResourceNames: s.subs[t],
		})
	}
	if err := s.firstRequestsSotw(ads); err != nil {
		return err
	}
	for {
		resp, release, err := recv(ads, false)
		if err != nil {
			return err
		}
		t, ok := typeOf(resp.typeURL)
		if !ok {
			release()
			logf("stream %d: ignoring a response of unknown type %s", s.index, resp.typeURL)
			continue
		}
		d, err := s.derive(t, release, func() (*derived, error) { return deriveSotw(t, resp, release) })
		if err != nil {
			return err
		}
		s.nonce[t] = resp.nonce
		changed, gen := s.noteResponse(t, resp.version, resp.resources > 0)
		if t == eds || t == rds {
			if d != nil {
				s.pending[t] = answer(s.pending[t], d.present)
			}
		}
		if err := request(t); err != nil { // the ACK
			return err
		}
		if dep, ok := dependent[t]; ok {
			s.state[t] = d
			if !slices.Equal(s.subs[dep], d.deps) || !s.asked[dep] {
				s.pending[dep] = resubscribe(s.subs[dep], s.pending[dep], d.deps)
				s.subs[dep] = d.deps
				if err := request(dep); err != nil {
					return err
				}
			}
		}
		// Envoy asks for listeners once its clusters are warm (every EDS name answered).
		if t == eds && !s.asked[lds] && len(s.pending[eds]) == 0 {
			if err := request(lds); err != nil {
				return err
			}
		}
		s.afterAck(t, changed, gen)
	}
}

func (s *stream) runDelta(ctx context.Context, conn *grpc.ClientConn) error {
	ads, err := conn.NewStream(ctx, adsDesc, deltaMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	s.f.live.Add(1)
	defer s.f.live.Add(-1)
	// Wildcard CDS (no names), and on a reconnect the other types with their subscriptions and versions.
	if err := s.firstRequestsDelta(ads); err != nil {
		return err
	}
	for {
		resp, release, err := recv(ads, true)
		if err != nil {
			return err
		}
		t, ok := typeOf(resp.typeURL)
		if !ok {
			release()
			logf("stream %d: ignoring a response of unknown type %s", s.index, resp.typeURL)
			continue
		}
		d, err := s.derive(t, release, func() (*derived, error) { return deriveDelta(t, s.state[t], resp, release) })
		if err != nil {
			return err
		}
		s.state[t] = d
		changed, gen := s.noteResponse(t, resp.version, resp.resources > 0)
		if t == eds || t == rds {
			s.pending[t] = answer(s.pending[t], d.present)
		}
		if err := ads.SendMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURLs[t], ResponseNonce: resp.nonce}); err != nil {
			return err
		}
		if dep, ok := dependent[t]; ok {
			added, removed := diff(s.subs[dep], d.deps)
			if len(added) > 0 || len(removed) > 0 || !s.asked[dep] {
				s.pending[dep] = resubscribe(s.subs[dep], s.pending[dep], d.deps)
				s.subs[dep] = d.deps
				s.asked[dep] = true
				if err := ads.SendMsg(&discovery.DeltaDiscoveryRequest{
					TypeUrl: typeURLs[dep], ResourceNamesSubscribe: added, ResourceNamesUnsubscribe: removed,
				}); err != nil {
					return err
				}
			}
		}
		if t == eds && !s.asked[lds] && len(s.pending[eds]) == 0 {
			s.asked[lds] = true
			if err := ads.SendMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURLs[lds]}); err != nil {
				return err
			}
		}
		s.afterAck(t, changed, gen)
	}
}

// ---- main -----------------------------------------------------------------------------------------------

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

func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("getrlimit: %v", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			logf("setrlimit(NOFILE, %d): %v", lim.Max, err)
		}
	}
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		// What harness/testbin.py checks after a build: the grpc-go version the wrapper pins.
		fmt.Println("xds-load grpc-go", moduleVersion("google.golang.org/grpc"),
			"go-control-plane/envoy", moduleVersion("github.com/envoyproxy/go-control-plane/envoy"))
		return
	}
	server := flag.String("server", "", "control plane HOST:PORT (required)")
	n := flag.Int("streams", 1, "number of simulated Envoys, each with its own connection")
	mode := flag.String("mode", "sotw", "sotw or delta (ADS either way)")
	groups := flag.Int("groups", 1, `node.cluster is "group-<i % groups>"`)
	rate := flag.Float64("connect-rate", 0, "new streams per second (0: all at once)")
	timeout := flag.Duration("timeout", 120*time.Second, "how long to wait for every stream to sync")
	retry := flag.Bool("retry", false, "reconnect after UNAVAILABLE/RESOURCE_EXHAUSTED (backoff 0.1-1 s)")
	idPrefix := flag.String("id-prefix", "load", `node.id is "<id-prefix>-<i>"`)
	cpuProfile := flag.String("cpuprofile", "", "write a Go CPU profile of the whole run to this file")
	flag.StringVar(&memProfile, "memprofile", "", "write a Go heap profile to this file at each `status`")
	flag.Parse()
	if *cpuProfile != "" {
		out, err := os.Create(*cpuProfile)
		if err != nil {
			logf("-cpuprofile: %v", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			logf("-cpuprofile: %v", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if *server == "" || *n < 1 || *groups < 1 || (*mode != "sotw" && *mode != "delta") || *rate < 0 {
		fmt.Fprintln(os.Stderr, "usage: xds-load -server HOST:PORT [-streams N] [-mode sotw|delta] [-groups G] "+
			"[-connect-rate R] [-timeout D] [-retry] [-id-prefix P]")
		os.Exit(2)
	}
	raiseFileLimit()
	if os.Getenv("GOGC") == "" {
		// The live heap is small (tens of MB) but thousands of goroutines' stacks are scanned on every cycle;
		// at the default GOGC=100 that scanning was ~45 % of the client's CPU during a slow storm. A 5x heap
		// target cuts the cycles; the memory at rest (`status` heap_mb) is unaffected.
		debug.SetGCPercent(400)
	}
	emit(map[string]any{"event": "started", "pid": os.Getpid()})

	f := &fleet{
		cfg:      config{server: *server, delta: *mode == "delta", retry: *retry, idPrefix: *idPrefix, groups: *groups},
		errs:     errorCounts{m: map[string]int{}},
		syncPoke: make(chan struct{}, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.streams = make([]*stream, *n)
	for i := range f.streams {
		f.streams[i] = &stream{f: f, index: i, node: &core.Node{
			Id: fmt.Sprintf("%s-%d", *idPrefix, i), Cluster: fmt.Sprintf("group-%d", i%*groups),
			UserAgentName: "xds-load",
		}}
	}
	began := time.Now()
	wg.Add(*n)
	go func() {
		for i, s := range f.streams {
			if *rate > 0 {
				due := began.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(d):
					}
				}
			}
			if ctx.Err() != nil {
				wg.Done()
				continue
			}
			go s.run(ctx, &wg)
		}
	}()

	deadline := time.After(*timeout)
wait:
	for f.synced.Load()+f.gaveUp.Load() < int64(*n) {
		select {
		case <-f.syncPoke:
		case <-deadline:
			break wait
		}
	}
	synced := f.synced.Load()
	f.syncMu.Lock()
	out := map[string]any{
		"event": "synced", "streams": *n, "synced": synced, "lost": int64(*n) - synced,
		"seconds": math.Round(time.Since(began).Seconds()*1000) / 1000, "errors": f.errs.snapshot(),
	}
	percentiles(f.syncTimes, out)
	f.syncMu.Unlock()
	emit(out)

	commands(f)
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		logf("some streams did not close within 10 s")
	}
	logf("responses received: cds=%d eds=%d lds=%d rds=%d; distinct derivations: %d",
		responsesByType[cds].Load(), responsesByType[eds].Load(), responsesByType[lds].Load(),
		responsesByType[rds].Load(), derivations.Load())
	emit(map[string]any{"event": "bye"})
}

func commands(f *fleet) {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "quit":
			return
		case "status":
			// Live memory, not garbage awaiting collection: what a stream holds at rest (issue 12).
			runtime.GC()
			var mem runtime.MemStats
			runtime.ReadMemStats(&mem)
			writeHeapProfile()
			emit(map[string]any{"event": "status", "live": f.live.Load(), "synced": f.synced.Load(),
				"errors": f.errs.snapshot(), "heap_mb": math.Round(float64(mem.HeapInuse)/(1<<20)*10) / 10})
		case "mark":
			t, ok := xdsType(0), false
			if len(fields) == 3 {
				for i, name := range typeNames {
					if name == fields[2] {
						t, ok = xdsType(i), true
					}
				}
			}
			if !ok {
				logf("usage: mark ID cds|eds|lds|rds (got %q)", in.Text())
				continue
			}
			runMark(f, fields[1], t)
		default:
			logf("unknown command %q (mark ID TYPE, status, quit)", fields[0])
		}
	}
}

var memProfile string

func writeHeapProfile() {
	if memProfile == "" {
		return
	}
	out, err := os.Create(memProfile)
	if err == nil {
		err = pprof.WriteHeapProfile(out)
		out.Close()
	}
	if err != nil {
		logf("-memprofile: %v", err)
	}
}

const markTimeout = 60 * time.Second

func runMark(f *fleet, id string, t xdsType) {
	mark.mu.Lock()
	mark.gen++
	gen := mark.gen
	mark.typ, mark.t0, mark.times = t, time.Now(), nil
	mark.mu.Unlock()
	// Each stream's baseline is the version it holds now (T0).
	for _, s := range f.streams {
		s.mu.Lock()
		s.markGen, s.markBase, s.markDone = gen, s.version[t], false
		s.mu.Unlock()
	}
	emit(map[string]any{"event": "marked", "id": id})
	deadline := time.After(markTimeout)
	for {
		mark.mu.Lock()
		received := len(mark.times)
		mark.mu.Unlock()
		if int64(received) >= f.live.Load() {
			break
		}
		select {
		case <-mark.notify:
			continue
		case <-deadline:
		}
		break
	}
	mark.mu.Lock()
	out := map[string]any{"event": "converged", "id": id, "streams": f.live.Load(), "received": len(mark.times)}
	percentiles(mark.times, out)
	mark.mu.Unlock()
	emit(out)
}
