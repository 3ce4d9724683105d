// The grpc-go anchor of the scale bench's "one client over 1,000 backends"
// (bench/scale-wide.ts): a grpc-go client on etcd's own naming resolver
// (go.etcd.io/etcd/clientv3/naming/resolver) with round_robin, so it
// connects to every registered backend, calling SayHello from -concurrency
// goroutines in a closed loop, as bench/scale-wide-client.ts does for ours.
//
// Phases: start → first successful call (timed from the start of main: the
// etcd client and the channel are created after it); -warm of calls not
// counted; -duration of counted calls; -idle of nothing (CPU and RSS).
//
// stdout, one JSON line at the end:
//   {"event":"done","firstCallMs":..,"ok":..,"failed":..,"rps":..,"rssMB":..,"idleRssMB":..,"idleCpuMsPerS":..,"lastError":".."}
// (lastError: the last failed call's error, "" when none failed).
//
// :authority is the target's last path segment (the service), as our
// resolver's default authority: grpc-go would send "prefix/service", which
// Node's HTTP/2 server refuses with RST_STREAM PROTOCOL_ERROR.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"meshpeers/wire"
)

func cpuMs() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec)*1e3 + float64(t.Usec)/1e3 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func rssMB() float64 {
	b, err := ioutil.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return float64(pages*int64(os.Getpagesize())) / (1 << 20)
}

func fatal(err error) {
	b, _ := json.Marshal(map[string]interface{}{"event": "fatal", "error": err.Error()})
	fmt.Println(string(b))
	os.Exit(1)
}

func main() {
	t0 := time.Now()
	etcdEps := flag.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	target := flag.String("target", "etcd:///services/greeter", "gRPC target")
	concurrency := flag.Int("concurrency", 16, "calls in flight")
	warm := flag.Duration("warm", time.Second, "uncounted calls first")
	duration := flag.Duration("duration", 5*time.Second, "counted calls")
	idle := flag.Duration("idle", 3*time.Second, "idle spell after the calls (CPU, RSS)")
	flag.Parse()

	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcdEps, ","), DialTimeout: 5 * time.Second, LogConfig: &lc})
	if err != nil {
		fatal(err)
	}
	defer cli.Close()
	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		fatal(err)
	}
	authority := *target
	if i := strings.LastIndex(authority, "/"); i >= 0 {
		authority = authority[i+1:]
	}
	conn, err := grpc.Dial(*target, grpc.WithResolvers(builder), grpc.WithInsecure(), grpc.WithAuthority(authority), grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		fatal(err)
	}
	defer conn.Close()

	call := func(timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out := new(wire.Str)
		err := conn.Invoke(ctx, "/helloworld.Greeter/SayHello", &wire.Str{Value: "load"}, out, grpc.WaitForReady(true))
		return out.Value, err
	}

	firstCallMs := -1.0
	var firstErr atomic.Value
	for i := 0; i < 200 && firstCallMs < 0; i++ {
		if _, err := call(time.Second); err == nil {
			firstCallMs = float64(time.Since(t0)) / 1e6
		} else {
			firstErr.Store(err.Error())
		}
	}

	loop := func(until time.Time, ok, failed *int64) {
		var wg sync.WaitGroup
		for w := 0; w < *concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(until) {
					_, err := call(time.Second)
					if err != nil {
						atomic.AddInt64(failed, 1)
						firstErr.Store(err.Error())
						continue
					}
					atomic.AddInt64(ok, 1)
				}
			}()
		}
		wg.Wait()
	}
	var wOk, wFailed int64
	loop(time.Now().Add(*warm), &wOk, &wFailed)
	var ok, failed int64
	s := time.Now()
	loop(s.Add(*duration), &ok, &failed)
	secs := time.Since(s).Seconds()
	rss := rssMB()
	c0 := cpuMs()
	i0 := time.Now()
	time.Sleep(*idle)
	idleCpu := (cpuMs() - c0) / time.Since(i0).Seconds()
	lastErr, _ := firstErr.Load().(string)
	b, _ := json.Marshal(map[string]interface{}{
		"lastError": lastErr,
		"event": "done", "firstCallMs": firstCallMs, "ok": ok, "failed": failed, "rps": float64(ok) / secs,
		"rssMB": rss, "idleRssMB": rssMB(), "idleCpuMsPerS": idleCpu,
	})
	fmt.Println(string(b))
}
