// The Go side of the scale bench's fleet (bench/scale-fleet-go.ts): one
// process holding many registrations and/or many resolvers, the way a Go
// service on etcd's own client would, so the bench can run the same herd as
// ours (bench/scale-fleet.ts) on the same etcd in the same run.
//
// Registrations: each its own lease (clientv3 Grant), its key written by
// etcd's naming/endpoints Manager (AddEndpoint with WithLease) and the lease
// kept alive by clientv3's KeepAlive; `perClient` registrations share one
// clientv3 client (its lessor multiplexes their keepalives on one stream).
// A lease is re-granted on loss with the policy of ours
// (balancer/registration-lease-keeper.ts, core/backoff.ts):
//   - loss: the KeepAlive channel closes (clientv3 closes it TTL after the
//     last answered keepalive);
//   - then wait until etcd answers a probe, shared by every registration on
//     the client: Maintenance/Status over the client's connection, a new try
//     every step of a full-jitter backoff (100 ms doubling to 1 s) whether or
//     not the last answered, done when a member names a leader;
//   - then a random delay in [0, 500 ms) (full jitter), then grant + put;
//   - a failed grant or put revokes its lease and retries after a
//     full-jitter backoff (50 ms doubling to 500 ms) and the probe.
// Every call has a 3 s deadline (ours: the etcd client's request timeout).
//
// Resolvers: etcd's own go.etcd.io/etcd/clientv3/naming/resolver, built as
// grpc-go builds it, with a recording ClientConn in place of a channel: it
// rebuilds the full address list from its map after every watch response
// and hands it over (UpdateState), empty sets included.
//
// Control: HTTP on 127.0.0.1 (printed on stdout as
// {"event":"listening","addr":"127.0.0.1:PORT"}); POST /call with a JSON
// request {cmd, ...}, the reply {result} or {error}. Commands: register,
// resolve, report, stop (the requests and the report are those of
// bench/scale-fleet.ts). The process exits when its parent goes.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
	etcdresolver "go.etcd.io/etcd/clientv3/naming/resolver"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.uber.org/zap"
	gresolver "google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
)

const callTimeout = 3 * time.Second

func epochMs() float64 { return float64(time.Now().UnixNano()) / 1e6 }

// backoff is core/backoff.ts: full jitter, each delay uniform in [0, min(max, initial x 2^attempt)].
type backoff struct {
	initial, max time.Duration
	attempt      uint
}

func (b *backoff) next() time.Duration {
	ceiling := b.initial << b.attempt
	if ceiling > b.max || ceiling <= 0 {
		ceiling = b.max
	}
	if b.attempt < 30 {
		b.attempt++
	}
	return time.Duration(rand.Int63n(int64(ceiling) + 1))
}

func (b *backoff) reset() { b.attempt = 0 }

// client is one clientv3 client and its shared probe.
type client struct {
	cli   *clientv3.Client
	mu    sync.Mutex
	probe chan struct{} // closed when the running probe saw etcd answer; nil when none runs
}

func newClient(eps []string) (*client, error) {
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		LogConfig:            &lc,
	})
	if err != nil {
		return nil, err
	}
	return &client{cli: cli}, nil
}

// whenEtcdAnswers is whenEtcdAnswers of registration-lease-keeper.ts.
func (c *client) whenEtcdAnswers(stop <-chan struct{}) {
	c.mu.Lock()
	ch := c.probe
	if ch == nil {
		ch = make(chan struct{})
		c.probe = ch
		go c.runProbe(ch)
	}
	c.mu.Unlock()
	select {
	case <-ch:
	case <-stop:
	}
}

func (c *client) runProbe(ch chan struct{}) {
	var once sync.Once
	finish := func() {
		once.Do(func() {
			c.mu.Lock()
			c.probe = nil
			c.mu.Unlock()
			close(ch)
		})
	}
	mc := pb.NewMaintenanceClient(c.cli.ActiveConnection())
	b := &backoff{initial: 100 * time.Millisecond, max: time.Second}
	for {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			resp, err := mc.Status(ctx, &pb.StatusRequest{})
			if err == nil && resp.Leader != 0 {
				finish()
			}
		}()
		select {
		case <-ch:
			return
		case <-time.After(b.next()):
		}
	}
}

// registration: one lease, one key, as a Go server registers itself.
type registration struct {
	c    *client
	em   endpoints.Manager
	key  string
	addr string
	ttl  int64

	mu           sync.Mutex
	state        string
	lease        clientv3.LeaseID
	registeredAt float64
	grantingAt   float64
	lostAt       float64
}

func (r *registration) set(state string) {
	r.mu.Lock()
	r.state = state
	switch state {
	case "REGISTERED":
		r.registeredAt = epochMs()
	case "GRANTING":
		r.grantingAt = epochMs()
	case "LOST":
		r.lostAt = epochMs()
	}
	r.mu.Unlock()
}

// grantOnce: a fresh lease, the key under it, the keepalive channel; on failure the lease is revoked.
func (r *registration) grantOnce(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	g, err := r.c.cli.Grant(cctx, r.ttl)
	cancel()
	if err != nil {
		return nil, err
	}
	revoke := func() {
		go func() {
			rctx, rcancel := context.WithTimeout(context.Background(), callTimeout)
			r.c.cli.Revoke(rctx, g.ID)
			rcancel()
		}()
	}
	cctx, cancel = context.WithTimeout(ctx, callTimeout)
	err = r.em.AddEndpoint(cctx, r.key, endpoints.Endpoint{Addr: r.addr}, clientv3.WithLease(g.ID))
	cancel()
	if err != nil {
		revoke()
		return nil, err
	}
	ka, err := r.c.cli.KeepAlive(ctx, g.ID)
	if err != nil {
		revoke()
		return nil, err
	}
	r.mu.Lock()
	r.lease = g.ID
	r.mu.Unlock()
	return ka, nil
}

func (r *registration) run(ctx context.Context, first chan<- error) {
	fail := &backoff{initial: 50 * time.Millisecond, max: 500 * time.Millisecond}
	stop := ctx.Done()
	sleep := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		if ctx.Err() != nil {
			return
		}
		r.set("GRANTING")
		ka, err := r.grantOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !sleep(fail.next()) {
				return
			}
			r.c.whenEtcdAnswers(stop)
			continue
		}
		fail.reset()
		r.set("REGISTERED")
		if first != nil {
			first <- nil
			first = nil
		}
		for range ka {
		}
		if ctx.Err() != nil {
			return
		}
		r.set("LOST")
		mu.Lock()
		losses++
		mu.Unlock()
		r.c.whenEtcdAnswers(stop)
		if !sleep(time.Duration(rand.Int63n(int64(500 * time.Millisecond)))) {
			return
		}
	}
}

// recorder is a resolver.ClientConn that records what etcd's resolver hands over.
type recorder struct {
	expected     int
	mu           sync.Mutex
	size         int
	last         []gresolver.Address
	lastChangeAt float64
	full         bool
	minAfterFull int
	fullCh       chan struct{}
}

func (c *recorder) UpdateState(s gresolver.State) {
	n := len(s.Addresses)
	mu.Lock()
	deliveries++
	if n == 0 {
		empties++
	}
	mu.Unlock()
	c.mu.Lock()
	if n != c.size {
		c.lastChangeAt = epochMs()
	}
	c.size = n
	c.last = s.Addresses
	if c.full {
		if n < c.minAfterFull {
			c.minAfterFull = n
		}
	} else if n == c.expected {
		c.full = true
		c.minAfterFull = n
		close(c.fullCh)
	}
	c.mu.Unlock()
}

func (c *recorder) ReportError(error) {
	c.mu.Lock()
	full := c.full
	c.mu.Unlock()
	if full {
		mu.Lock()
		errorsSeen++
		mu.Unlock()
	}
}
func (c *recorder) NewAddress(a []gresolver.Address) { c.UpdateState(gresolver.State{Addresses: a}) }
func (c *recorder) NewServiceConfig(string)          {}
func (c *recorder) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}

var (
	mu         sync.Mutex
	clients    []*client
	regs       []*registration
	recs       []*recorder
	resolvers  []gresolver.Resolver
	expected   map[string]bool
	losses     int
	deliveries int
	empties    int
	errorsSeen int
	runCtx     context.Context
	runCancel  context.CancelFunc
)

type request struct {
	Cmd       string   `json:"cmd"`
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	Service   string   `json:"service"`
	Addrs     []string `json:"addrs"`
	TTL       int64    `json:"ttl"`
	PerClient int      `json:"perClient"`
	Path      string   `json:"path"`
	Count     int      `json:"count"`
	Expected  []string `json:"expected"`
}

func pool(eps []string, n, per int) ([]*client, error) {
	if per < 1 {
		per = 1
	}
	out := []*client{}
	for i := 0; i < n; i += per {
		c, err := newClient(eps)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		mu.Lock()
		clients = append(clients, c)
		mu.Unlock()
	}
	return out, nil
}

func register(r request) (interface{}, error) {
	t0 := time.Now()
	per := r.PerClient
	if per < 1 {
		per = 1
	}
	cs, err := pool(r.Endpoints, len(r.Addrs), per)
	if err != nil {
		return nil, err
	}
	target := r.Prefix + "/" + r.Service
	firsts := make(chan error, len(r.Addrs))
	for i, addr := range r.Addrs {
		c := cs[i/per]
		em, err := endpoints.NewManager(c.cli, target)
		if err != nil {
			return nil, err
		}
		reg := &registration{c: c, em: em, key: target + "/" + addr, addr: addr, ttl: r.TTL, state: "IDLE"}
		mu.Lock()
		regs = append(regs, reg)
		mu.Unlock()
		go reg.run(runCtx, firsts)
	}
	for range r.Addrs {
		<-firsts
	}
	return map[string]interface{}{"ms": float64(time.Since(t0)) / 1e6}, nil
}

func resolve(r request) (interface{}, error) {
	t0 := time.Now()
	per := r.PerClient
	if per < 1 {
		per = 1
	}
	cs, err := pool(r.Endpoints, r.Count, per)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	expected = map[string]bool{}
	for _, a := range r.Expected {
		expected[a] = true
	}
	mu.Unlock()
	var fulls []chan struct{}
	for i := 0; i < r.Count; i++ {
		b, _ := etcdresolver.NewBuilder(cs[i/per].cli)
		rec := &recorder{expected: len(r.Expected), size: -1, fullCh: make(chan struct{})}
		res, err := b.Build(gresolver.Target{Scheme: "etcd", Endpoint: r.Path}, rec, gresolver.BuildOptions{})
		if err != nil {
			return nil, err
		}
		mu.Lock()
		recs = append(recs, rec)
		resolvers = append(resolvers, res)
		mu.Unlock()
		fulls = append(fulls, rec.fullCh)
	}
	for _, ch := range fulls {
		<-ch
	}
	return map[string]interface{}{"ms": float64(time.Since(t0)) / 1e6}, nil
}

func cpuMs() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec)*1e3 + float64(t.Usec)/1e3 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func rss() int64 {
	b, err := ioutil.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func report() interface{} {
	mu.Lock()
	defer mu.Unlock()
	registered := 0
	lastReg, lastGrant, lastLost := []float64{}, []float64{}, []float64{}
	for _, r := range regs {
		r.mu.Lock()
		if r.state == "REGISTERED" {
			registered++
		}
		lastReg = append(lastReg, r.registeredAt)
		lastGrant = append(lastGrant, r.grantingAt)
		lastLost = append(lastLost, r.lostAt)
		r.mu.Unlock()
	}
	sizes, changes, mins := []int{}, []float64{}, []int{}
	wrong := 0
	for _, c := range recs {
		c.mu.Lock()
		sizes = append(sizes, c.size)
		changes = append(changes, c.lastChangeAt)
		if c.full {
			mins = append(mins, c.minAfterFull)
		} else {
			mins = append(mins, -1)
		}
		// Checked on the set held now (not on every delivery): an address
		// that was never registered, in the final set, counts.
		for _, a := range c.last {
			if !expected[a.Addr] {
				wrong++
				break
			}
		}
		c.mu.Unlock()
	}
	return map[string]interface{}{
		"registrations": map[string]interface{}{
			"count": len(regs), "registered": registered, "lastRegisteredAt": lastReg, "lastGrantingAt": lastGrant, "lastLostAt": lastLost, "losses": losses,
		},
		"resolvers": map[string]interface{}{
			"count": len(recs), "lastChangeAt": changes, "size": sizes, "minSizeAfterFull": mins, "empties": empties, "errors": errorsSeen, "wrong": wrong, "deliveries": deliveries,
		},
		"rss":   rss(),
		"cpuMs": cpuMs(),
	}
}

func stop() interface{} {
	mu.Lock()
	rs := resolvers
	leases := []clientv3.LeaseID{}
	owners := []*client{}
	for _, r := range regs {
		r.mu.Lock()
		if r.lease != 0 {
			leases = append(leases, r.lease)
			owners = append(owners, r.c)
		}
		r.mu.Unlock()
	}
	mu.Unlock()
	for _, r := range rs {
		r.Close()
	}
	runCancel()
	// Revoking deletes the keys at once; bounded, as etcd may be gone.
	var wg sync.WaitGroup
	for i, id := range leases {
		wg.Add(1)
		go func(c *client, id clientv3.LeaseID) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			c.cli.Revoke(ctx, id)
			cancel()
		}(owners[i], id)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		os.Exit(0)
	}()
	return "bye"
}

func handle(w http.ResponseWriter, req *http.Request) {
	var r request
	reply := map[string]interface{}{}
	if err := json.NewDecoder(req.Body).Decode(&r); err != nil {
		reply["error"] = err.Error()
	} else {
		var res interface{}
		var err error
		switch r.Cmd {
		case "register":
			res, err = register(r)
		case "resolve":
			res, err = resolve(r)
		case "report":
			res = report()
		case "stop":
			res = stop()
		default:
			err = fmt.Errorf("unknown command %q", r.Cmd)
		}
		if err != nil {
			reply["error"] = err.Error()
		} else {
			reply["result"] = res
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(reply)
}

func main() {
	rand.Seed(time.Now().UnixNano() ^ int64(os.Getpid()))
	runCtx, runCancel = context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, _ := json.Marshal(map[string]interface{}{"event": "listening", "addr": lis.Addr().String()})
	fmt.Println(string(b))
	// Exit when the parent goes (reparented): no fleet outlives the bench.
	parent := os.Getppid()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(0)
			}
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/call", handle)
	http.Serve(lis, mux)
}
