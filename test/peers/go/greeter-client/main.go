// A Go client on etcd's own resolver (go.etcd.io/etcd/clientv3/naming/resolver):
// it dials etcd:///<target> with grpc-go's round_robin, so it connects to
// every registered backend, and calls SayHello -count times. This is the
// client etcd issue 19700 crashes with "hash of unhashable type
// map[string]interface {}" when a registration's Metadata is a JSON object.
//
// -authority sets grpc.WithAuthority; without it grpc-go sends the target
// path (e.g. "services/greeter") as :authority.
//
// -health-check turns on grpc-go's client-side health checking (gRPC A17:
// the health package's import plus "healthCheckConfig" in the service
// config, for -health-service, default ""): round_robin then skips a
// backend that reports NOT_SERVING.
//
// -duration D: instead of -count calls, call for D and print, every 100 ms,
//   {"event":"tick","atMs":T,"backends":{"host:port":count},"failed":F}
// (the calls of that interval; T is Unix time in ms).
//
// stdout: one JSON line per failed call ({"event":"error",...}), then
//   {"event":"done","ok":N,"failed":F,"backends":{"host:port":count}}
// exit 0 when every call succeeded, 1 otherwise.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers the client-side health checking function
	"meshpeers/wire"
)

func emit(v map[string]interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func main() {
	etcdEps := flag.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	target := flag.String("target", "etcd:///services/greeter", "gRPC target")
	count := flag.Int("count", 30, "calls to make")
	wantBackends := flag.Int("backends", 1, "wait (up to 10 s) until this many backends answered before counting")
	authority := flag.String("authority", "", ":authority to send (grpc.WithAuthority); empty: grpc-go's default")
	healthCheck := flag.Bool("health-check", false, "client-side health checking (healthCheckConfig in the service config)")
	healthService := flag.String("health-service", "", "service name of the health Watch")
	duration := flag.Duration("duration", 0, "call for this long, printing a tick every 100 ms (instead of -count)")
	flag.Parse()

	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcdEps, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		emit(map[string]interface{}{"event": "fatal", "error": err.Error()})
		os.Exit(1)
	}
	defer cli.Close()
	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		emit(map[string]interface{}{"event": "fatal", "error": err.Error()})
		os.Exit(1)
	}
	opts := []grpc.DialOption{
		grpc.WithResolvers(builder),
		grpc.WithInsecure(),
	}
	if *healthCheck {
		hc, _ := json.Marshal(*healthService)
		opts = append(opts, grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":`+string(hc)+`}}`))
	} else {
		opts = append(opts, grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	}
	if *authority != "" {
		opts = append(opts, grpc.WithAuthority(*authority))
	}
	conn, err := grpc.Dial(*target, opts...)
	if err != nil {
		emit(map[string]interface{}{"event": "fatal", "error": err.Error()})
		os.Exit(1)
	}
	defer conn.Close()

	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		out := new(wire.Str)
		err := conn.Invoke(ctx, "/helloworld.Greeter/SayHello", &wire.Str{Value: "go"}, out, grpc.WaitForReady(true))
		return out.Value, err
	}
	backendOf := func(reply string) string {
		if i := strings.LastIndex(reply, " from "); i >= 0 {
			return reply[i+6:]
		}
		return "unknown"
	}

	// round_robin connects to backends as the resolver reports them; warm up
	// (uncounted, errors included in the output) until all are in rotation.
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < *wantBackends && time.Now().Before(deadline) {
		reply, err := call()
		if err != nil {
			emit(map[string]interface{}{"event": "error", "phase": "warmup", "error": err.Error()})
			time.Sleep(100 * time.Millisecond)
			continue
		}
		seen[backendOf(reply)] = true
	}

	ok, failed := 0, 0
	backends := map[string]int{}
	if *duration > 0 {
		end := time.Now().Add(*duration)
		tick := map[string]int{}
		tickFailed := 0
		next := time.Now().Add(100 * time.Millisecond)
		for time.Now().Before(end) {
			reply, err := call()
			if err != nil {
				failed++
				tickFailed++
				emit(map[string]interface{}{"event": "error", "error": err.Error()})
			} else {
				ok++
				backends[backendOf(reply)]++
				tick[backendOf(reply)]++
			}
			if now := time.Now(); !now.Before(next) {
				emit(map[string]interface{}{"event": "tick", "atMs": now.UnixNano() / int64(time.Millisecond), "backends": tick, "failed": tickFailed})
				tick = map[string]int{}
				tickFailed = 0
				next = now.Add(100 * time.Millisecond)
			}
		}
		*count = 0
	}
	for i := 0; i < *count; i++ {
		reply, err := call()
		if err != nil {
			failed++
			emit(map[string]interface{}{"event": "error", "error": err.Error()})
			continue
		}
		ok++
		backends[backendOf(reply)]++
	}
	emit(map[string]interface{}{"event": "done", "ok": ok, "failed": failed, "backends": backends})
	if failed > 0 {
		os.Exit(1)
	}
}
