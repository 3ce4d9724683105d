// A helloworld greeter on grpc-go, registered by etcd's own Go naming
// package (endpoints.Manager, with a lease kept alive), exactly as a Go
// service in the mesh would be. grpc.NewServer() keeps grpc-go's default
// keepalive enforcement (pings no more often than every 5 minutes, none
// without calls): a client that pings faster gets GOAWAY too_many_pings.
//
// HelloRequest and HelloReply are one string in field 1; package wire
// (meshpeers/wire) encodes them by hand, so no generated code is needed.
//
// It serves grpc.health.v1 (grpc-go's health.Server: "" and
// helloworld.Greeter SERVING). SIGUSR1 sets both NOT_SERVING, SIGUSR2
// SERVING again; the registration stays either way, so only a client that
// health-checks (gRPC A17) stops calling it. SIGTERM/SIGINT: NOT_SERVING,
// revoke, GracefulStop.
//
// stdout, one JSON object a line:
//   {"event":"registered","addr":"127.0.0.1:PORT","key":"..."}
//   {"event":"peer","peer":"127.0.0.1:NNNNN","n":1}   first call on a new connection
//   {"event":"health","status":"NOT_SERVING","calls":N,"lastCallMs":T,"atMs":T}
//        on each flip: calls so far, the last call's and the flip's Unix time (ms)
//   {"event":"stopped","calls":N,"peers":P}
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"meshpeers/wire"
	"strings"
)

func emit(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

type greeter struct {
	addr     string
	mu       sync.Mutex
	peers    map[string]bool
	calls    int
	lastCall time.Time
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano() / int64(time.Millisecond)
}

func (g *greeter) sayHello(ctx context.Context, in *wire.Str) (*wire.Str, error) {
	if p, ok := peer.FromContext(ctx); ok {
		g.mu.Lock()
		g.calls++
		g.lastCall = time.Now()
		if !g.peers[p.Addr.String()] {
			g.peers[p.Addr.String()] = true
			emit(map[string]interface{}{"event": "peer", "peer": p.Addr.String(), "n": len(g.peers)})
		}
		g.mu.Unlock()
	}
	name := in.Value
	if name == "" {
		name = "world"
	}
	return &wire.Str{Value: fmt.Sprintf("Hello %s from %s", name, g.addr)}, nil
}

func main() {
	port := flag.Int("port", 0, "port to serve on")
	etcdEps := flag.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	target := flag.String("target", "services/greeter", "naming target (prefix/service)")
	ttl := flag.Int64("ttl", 10, "lease TTL, seconds")
	flag.Parse()

	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		emit(map[string]interface{}{"event": "error", "error": err.Error()})
		os.Exit(1)
	}
	g := &greeter{addr: addr, peers: map[string]bool{}}
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "helloworld.Greeter",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "SayHello",
			Handler: func(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				in := new(wire.Str)
				if err := dec(in); err != nil {
					return nil, err
				}
				return g.sayHello(ctx, in)
			},
		}},
		Metadata: "helloworld.proto",
	}, g)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("helloworld.Greeter", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)

	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcdEps, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		emit(map[string]interface{}{"event": "error", "error": err.Error()})
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	lease, err := cli.Grant(ctx, *ttl)
	cancel()
	if err != nil {
		emit(map[string]interface{}{"event": "error", "error": err.Error()})
		os.Exit(1)
	}
	em, err := endpoints.NewManager(cli, *target)
	if err != nil {
		emit(map[string]interface{}{"event": "error", "error": err.Error()})
		os.Exit(1)
	}
	key := *target + "/" + addr
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	err = em.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease.ID))
	cancel()
	if err != nil {
		emit(map[string]interface{}{"event": "error", "error": err.Error()})
		os.Exit(1)
	}
	ka, err := cli.KeepAlive(context.Background(), lease.ID)
	if err != nil {
		emit(map[string]interface{}{"event": "error", "error": err.Error()})
		os.Exit(1)
	}
	go func() {
		for range ka {
		}
	}()
	emit(map[string]interface{}{"event": "registered", "addr": addr, "key": key})

	flip := make(chan os.Signal, 4)
	signal.Notify(flip, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range flip {
			st := healthpb.HealthCheckResponse_SERVING
			if s == syscall.SIGUSR1 {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			at := time.Now()
			hs.SetServingStatus("", st)
			hs.SetServingStatus("helloworld.Greeter", st)
			g.mu.Lock()
			emit(map[string]interface{}{"event": "health", "status": st.String(), "calls": g.calls, "lastCallMs": unixMs(g.lastCall), "atMs": unixMs(at)})
			g.mu.Unlock()
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	// NOT_SERVING first, so health-checking clients stop before the key goes.
	hs.Shutdown()
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	cli.Revoke(ctx, lease.ID)
	cancel()
	srv.GracefulStop()
	g.mu.Lock()
	emit(map[string]interface{}{"event": "stopped", "calls": g.calls, "peers": len(g.peers)})
	g.mu.Unlock()
	cli.Close()
}
