// Command vcp-go-driver is a client of the provider socket built on grpc-go,
// the library every Secrets Store CSI driver release uses. It dials the way a
// driver does (see -dial) and prints every result as one JSON document on
// stdout, so the Rust tests and the benchmark can drive it.
//
// It is built by `scripts/testbed.sh go-driver` in GOPATH mode against
// Debian's packaged grpc-go, with stubs generated from crates/proto/proto/provider.proto
// at build time (package vcptestbed/v1alpha1 in the build's GOPATH).
//
// Usage:
//
//	vcp-go-driver -socket PATH [-dial v15|v16] [-timeout 10s] COMMAND [flags]
//
// Commands:
//
//	version                               one Version call
//	mount [-request FILE]                 one Mount; FILE (default "-", stdin) holds a
//	                                      MountRequest in proto3 JSON
//	rotate [-request FILE] [-then FILE]   a Mount, then on the same connection a second
//	                                      Mount (-then, default the same request) whose
//	                                      currentObjectVersion is the first answer's
//	                                      objectVersion, as a v1.5 rotation sends it
//	concurrent [-n 20] [-request FILE]    n connections at once, each Version then Mount
//	bench [-n 200] [-warmup 20] [-request FILE]
//	                                      warm Mounts on one persistent connection
//	serve -request FILE                   one persistent connection, one call per line
//	                                      read from stdin ("mount", "mount {JSON}" with
//	                                      another request on the line, or "version"), one
//	                                      outcome line printed per call, until EOF (so a
//	                                      harness can interleave calls with its own)
//
// A call's outcome is {"latencyMs": float, "response": {...}} or
// {"latencyMs": float, "status": {"code": int, "name": string, "message": string}}.
// Exit status: 0 when every call succeeded, 3 when a call failed (the JSON is
// still printed), 2 on bad usage, 1 when the request cannot be read.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"math"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang/protobuf/jsonpb"
	"github.com/golang/protobuf/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "vcptestbed/v1alpha1"
)

// The driver's method config: wait for a ready connection instead of failing
// fast, and retry UNAVAILABLE up to 3 attempts with a 1 s .. 10 s backoff.
const serviceConfig = `{
  "methodConfig": [{
    "name": [{"service": "v1alpha1.CSIDriverProvider"}],
    "waitForReady": true,
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "1s",
      "maxBackoff": "10s",
      "backoffMultiplier": 1.1,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// The driver's default --max-call-recv-msg-size.
const maxRecvMsgSize = 4 * 1024 * 1024

// grpc-go 1.33 reads GRPC_GO_RETRY once, at start-up, and applies retry
// policies only when it is "on" (later releases, and so the drivers, retry
// by default).
const retryEnv = "GRPC_GO_RETRY"

type options struct {
	socket  string
	dial    string
	timeout time.Duration
}

// dial opens one client connection the way the chosen driver generation does.
func dial(o options) (*grpc.ClientConn, error) {
	common := []grpc.DialOption{
		grpc.WithInsecure(),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	}
	switch o.dial {
	case "v15":
		// Driver v1.5 and older: a bare socket path through the passthrough
		// resolver, so :authority is the path, and a dialer that dials
		// "unix" to whatever address it is handed.
		dialer := func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
		return grpc.Dial(o.socket, append(common, grpc.WithContextDialer(dialer))...)
	case "v16":
		// Driver v1.6: target unix:<path>, :authority localhost, grpc-go's
		// own dialer. (1.33 has no NewClient; Dial sends the same bytes.)
		return grpc.Dial("unix:"+o.socket, append(common, grpc.WithAuthority("localhost"))...)
	default:
		return nil, fmt.Errorf("unknown -dial %q (want v15 or v16)", o.dial)
	}
}

// outcome is one call's result as printed.
type outcome struct {
	LatencyMs float64         `json:"latencyMs"`
	Response  json.RawMessage `json:"response,omitempty"`
	Status    *statusJSON     `json:"status,omitempty"`
}

type statusJSON struct {
	Code    int    `json:"code"`
	Name    string `json:"name"`
	Message string `json:"message"`
}

func (o outcome) failed() bool { return o.Status != nil }

var marshaler = jsonpb.Marshaler{}

func result(start time.Time, resp proto.Message, err error) outcome {
	out := outcome{LatencyMs: ms(time.Since(start))}
	if err != nil {
		st := status.Convert(err)
		out.Status = &statusJSON{Code: int(st.Code()), Name: st.Code().String(), Message: st.Message()}
		return out
	}
	text, merr := marshaler.MarshalToString(resp)
	if merr != nil {
		out.Status = &statusJSON{Code: 13, Name: "Internal", Message: "client could not print the response: " + merr.Error()}
		return out
	}
	out.Response = json.RawMessage(text)
	return out
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d.Nanoseconds())/1e3) / 1e3
}

func callVersion(cc *grpc.ClientConn, timeout time.Duration) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	resp, err := pb.NewCSIDriverProviderClient(cc).Version(ctx, &pb.VersionRequest{Version: "v1alpha1"})
	return result(start, resp, err)
}

func callMount(cc *grpc.ClientConn, timeout time.Duration, req *pb.MountRequest) (outcome, *pb.MountResponse) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	resp, err := pb.NewCSIDriverProviderClient(cc).Mount(ctx, req)
	return result(start, resp, err), resp
}

func readRequest(path string) (*pb.MountRequest, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("opening the request: %v", err)
		}
		defer f.Close()
		r = f
	}
	data, err := ioutil.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading the request from %s: %v", path, err)
	}
	req := &pb.MountRequest{}
	if err := jsonpb.UnmarshalString(string(data), req); err != nil {
		return nil, fmt.Errorf("the request in %s is not a MountRequest in proto3 JSON: %v", path, err)
	}
	return req, nil
}

func emit(v interface{}) {
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "vcp-go-driver: writing the result: %v\n", err)
		os.Exit(1)
	}
}

func exitFor(calls ...outcome) {
	for _, c := range calls {
		if c.failed() {
			os.Exit(3)
		}
	}
	os.Exit(0)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: vcp-go-driver -socket PATH [-dial v15|v16] [-timeout 10s] version|mount|rotate|concurrent|bench [flags]")
	os.Exit(2)
}

func main() {
	enableRetry()
	var o options
	global := flag.NewFlagSet("vcp-go-driver", flag.ContinueOnError)
	global.StringVar(&o.socket, "socket", "", "the provider's unix socket")
	global.StringVar(&o.dial, "dial", "v16", "how to dial: v15 (bare path, custom dialer) or v16 (unix:<path>, authority localhost)")
	global.DurationVar(&o.timeout, "timeout", 10*time.Second, "deadline of each call")
	if err := global.Parse(os.Args[1:]); err != nil || o.socket == "" || global.NArg() == 0 {
		usage()
	}
	command, rest := global.Arg(0), global.Args()[1:]
	sub := flag.NewFlagSet(command, flag.ContinueOnError)
	request := sub.String("request", "-", "file holding the MountRequest as proto3 JSON (- for stdin)")
	then := sub.String("then", "", "rotate: file holding the second request (default: the first)")
	n := sub.Int("n", 0, "concurrent: connections (default 20); bench: timed calls (default 200)")
	warmup := sub.Int("warmup", 20, "bench: untimed calls first")
	if err := sub.Parse(rest); err != nil || sub.NArg() != 0 {
		usage()
	}
	switch command {
	case "version":
		cc := mustDial(o)
		defer cc.Close()
		out := callVersion(cc, o.timeout)
		emit(out)
		exitFor(out)
	case "mount":
		req := mustRead(*request)
		cc := mustDial(o)
		defer cc.Close()
		out, _ := callMount(cc, o.timeout, req)
		emit(out)
		exitFor(out)
	case "rotate":
		first := mustRead(*request)
		second := first
		if *then != "" {
			second = mustRead(*then)
		}
		cc := mustDial(o)
		defer cc.Close()
		out1, resp := callMount(cc, o.timeout, first)
		calls := []outcome{out1}
		if !out1.failed() {
			next := proto.Clone(second).(*pb.MountRequest)
			next.CurrentObjectVersion = resp.ObjectVersion
			out2, _ := callMount(cc, o.timeout, next)
			calls = append(calls, out2)
		}
		emit(map[string]interface{}{"calls": calls})
		exitFor(calls...)
	case "concurrent":
		if *n == 0 {
			*n = 20
		}
		concurrent(o, mustRead(*request), *n)
	case "serve":
		if *request == "-" {
			fmt.Fprintln(os.Stderr, "vcp-go-driver: serve reads its commands from stdin, so it needs -request FILE")
			os.Exit(2)
		}
		serve(o, mustRead(*request))
	case "bench":
		if *n == 0 {
			*n = 200
		}
		bench(o, mustRead(*request), *n, *warmup)
	default:
		usage()
	}
}

// enableRetry re-executes this program with GRPC_GO_RETRY=on when it is not
// set, so the retry policy takes effect as it does in the drivers.
func enableRetry() {
	if strings.EqualFold(os.Getenv(retryEnv), "on") {
		return
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vcp-go-driver: cannot find my own executable to enable retries: %v\n", err)
		os.Exit(1)
	}
	env := append(os.Environ(), retryEnv+"=on")
	err = syscall.Exec(self, os.Args, env)
	fmt.Fprintf(os.Stderr, "vcp-go-driver: re-executing with %s=on: %v\n", retryEnv, err)
	os.Exit(1)
}

func mustDial(o options) *grpc.ClientConn {
	cc, err := dial(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vcp-go-driver: dialing %s (%s): %v\n", o.socket, o.dial, err)
		os.Exit(2)
	}
	return cc
}

func mustRead(path string) *pb.MountRequest {
	req, err := readRequest(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vcp-go-driver: %v\n", err)
		os.Exit(1)
	}
	return req
}

// connection is what one of the concurrent connections saw.
type connection struct {
	Version outcome  `json:"version"`
	Mount   *outcome `json:"mount,omitempty"`
}

// concurrent opens n connections at the same moment, each calling Version and
// then Mount, the way n drivers (or one driver restarted n times) would.
func concurrent(o options, req *pb.MountRequest, n int) {
	results := make([]connection, n)
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	start := time.Now()
	for i := 0; i < n; i++ {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			ready.Done()
			<-gate
			cc, err := dial(o)
			if err != nil {
				results[i].Version = outcome{Status: &statusJSON{Code: 14, Name: "Unavailable", Message: err.Error()}}
				return
			}
			defer cc.Close()
			results[i].Version = callVersion(cc, o.timeout)
			mount, _ := callMount(cc, o.timeout, req)
			results[i].Mount = &mount
		}(i)
	}
	ready.Wait()
	close(gate)
	done.Wait()
	emit(map[string]interface{}{"connections": results, "wallMs": ms(time.Since(start))})
	var all []outcome
	for _, r := range results {
		all = append(all, r.Version)
		if r.Mount != nil {
			all = append(all, *r.Mount)
		}
	}
	exitFor(all...)
}

// bench times warm Mounts on one persistent connection, as the driver keeps
// one connection per provider socket.
func bench(o options, req *pb.MountRequest, n, warmup int) {
	cc := mustDial(o)
	defer cc.Close()
	for i := 0; i < warmup; i++ {
		if out, _ := callMount(cc, o.timeout, req); out.failed() {
			emit(map[string]interface{}{"failed": out, "phase": "warmup", "call": i})
			os.Exit(3)
		}
	}
	lat := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		out, _ := callMount(cc, o.timeout, req)
		if out.failed() {
			emit(map[string]interface{}{"failed": out, "phase": "timed", "call": i})
			os.Exit(3)
		}
		lat = append(lat, out.LatencyMs)
	}
	sorted := append([]float64(nil), lat...)
	sort.Float64s(sorted)
	at := func(q float64) float64 {
		if len(sorted) == 0 {
			return 0
		}
		return sorted[int(math.Round(float64(len(sorted)-1)*q))]
	}
	sum := 0.0
	for _, v := range sorted {
		sum += v
	}
	mean := 0.0
	if len(sorted) > 0 {
		mean = math.Round(sum/float64(len(sorted))*1e3) / 1e3
	}
	emit(map[string]interface{}{
		"n": n, "warmup": warmup, "latenciesMs": lat,
		"p50Ms": at(0.5), "p90Ms": at(0.9), "p99Ms": at(0.99), "meanMs": mean,
		"minMs": at(0), "maxMs": at(1),
	})
}

// serve answers one call per stdin line on one persistent connection.
func serve(o options, req *pb.MountRequest) {
	cc := mustDial(o)
	defer cc.Close()
	lines := bufio.NewScanner(os.Stdin)
	// A line may carry a whole request (tokens included): allow 1 MiB.
	lines.Buffer(make([]byte, 64*1024), 1<<20)
	for lines.Scan() {
		var out outcome
		line := strings.TrimSpace(lines.Text())
		switch {
		case line == "mount":
			out, _ = callMount(cc, o.timeout, req)
		case strings.HasPrefix(line, "mount {"):
			other := &pb.MountRequest{}
			if err := jsonpb.UnmarshalString(strings.TrimPrefix(line, "mount "), other); err != nil {
				fmt.Fprintf(os.Stderr, "vcp-go-driver: serve: the request after mount is not a MountRequest in proto3 JSON: %v\n", err)
				os.Exit(2)
			}
			out, _ = callMount(cc, o.timeout, other)
		case line == "version":
			out = callVersion(cc, o.timeout)
		default:
			fmt.Fprintf(os.Stderr, "vcp-go-driver: serve: unknown command %q (want mount, mount {request}, or version)\n", line)
			os.Exit(2)
		}
		emit(out)
	}
}
