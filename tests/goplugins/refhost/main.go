// Command refhost is a minimal go-plugin host used as the reference point
// for plughost's benchmarks: it measures what hashicorp/go-plugin's own
// client costs to start, ping and stop the gohello test plugin.
//
// Usage: refhost -plugin PATH [-n 50] [-pings 1000] [-mtls]
//
// It prints one JSON object on stdout:
//
//	{"start_ms":[...],"stop_ms":[...],"ping_us":[...],"greet":"hello, refhost"}
//
// start_ms: process spawn until the first successful health Ping, per run;
// stop_ms: Kill() (GRPCController.Shutdown, wait, reap), per run;
// ping_us: consecutive health Pings on one running plugin.
//
// With -calls it instead starts the goecho plugin once and measures calls to
// echo.v1.Echo (the reference of bench/calls.py; see calls.go).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// handshake must match tests/goplugins/goplugin (cookie PLUGHOST=gohello);
// -calls sets the value to goecho (tests/goplugins/echo).
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "PLUGHOST",
	MagicCookieValue: "gohello",
}

type result struct {
	StartMS []float64 `json:"start_ms"`
	StopMS  []float64 `json:"stop_ms"`
	PingUS  []float64 `json:"ping_us"`
	Greet   string    `json:"greet"`
}

// start launches the plugin and returns it once a health Ping succeeds.
func start(path string, mtls bool) (*plugin.Client, plugin.ClientProtocol, error) {
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// Non-nil so go-plugin offers PLUGIN_PROTOCOL_VERSIONS=1; we only Ping
		// and invoke by method name, so nothing needs to be dispensed.
		Plugins:  plugin.PluginSet{},
		AutoMTLS: mtls,
		// Keep go-plugin's trace-level chatter (and the plugin's stderr) quiet.
		Logger: hclog.New(&hclog.LoggerOptions{Name: "refhost", Level: hclog.Warn, Output: os.Stderr}),
	})
	rpc, err := c.Client()
	if err == nil {
		err = rpc.Ping()
	}
	if err != nil {
		c.Kill()
		return nil, nil, err
	}
	return c, rpc, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func run(path string, n, pings int, mtls bool) (*result, error) {
	res := &result{StartMS: []float64{}, StopMS: []float64{}, PingUS: []float64{}}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		c, _, err := start(path, mtls)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		res.StartMS = append(res.StartMS, ms(time.Since(t0)))
		t1 := time.Now()
		c.Kill()
		res.StopMS = append(res.StopMS, ms(time.Since(t1)))
	}

	c, rpc, err := start(path, mtls)
	if err != nil {
		return nil, fmt.Errorf("ping run: %w", err)
	}
	defer c.Kill()
	for i := 0; i < pings; i++ {
		t0 := time.Now()
		if err := rpc.Ping(); err != nil {
			return nil, fmt.Errorf("ping %d: %w", i, err)
		}
		res.PingUS = append(res.PingUS, float64(time.Since(t0).Nanoseconds())/1000)
	}

	// One call to the plugin's own service proves the connection is usable
	// beyond go-plugin's built-in health service.
	out := new(wrapperspb.StringValue)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn := rpc.(*plugin.GRPCClient).Conn
	if err := conn.Invoke(ctx, "/hello.v1.Greeter/Greet", wrapperspb.String("refhost"), out); err != nil {
		return nil, fmt.Errorf("greet: %w", err)
	}
	res.Greet = out.GetValue()
	return res, nil
}

func main() {
	path := flag.String("plugin", "", "path to the gohello plugin binary (bin/plugin)")
	n := flag.Int("n", 50, "number of sequential start/stop runs")
	pings := flag.Int("pings", 1000, "number of health pings on one running plugin")
	mtls := flag.Bool("mtls", false, "use go-plugin AutoMTLS")
	calls := flag.Bool("calls", false, "call benchmark against goecho instead of start/stop/ping")
	flag.IntVar(&callOpts.unary, "unary", 2000, "-calls: sequential unary Echo calls (latency)")
	flag.IntVar(&callOpts.callers, "callers", 16, "-calls: concurrent callers for the throughput run")
	flag.IntVar(&callOpts.parallel, "parallel", 4000, "-calls: unary calls shared by the concurrent callers")
	flag.IntVar(&callOpts.stream, "stream", 20000, "-calls: messages in one server-streaming call")
	flag.IntVar(&callOpts.payload, "payload", 32, "-calls: bytes in each Echo request")
	flag.IntVar(&callOpts.warmup, "warmup", 200, "-calls: unary calls before measuring")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "refhost: -plugin PATH is required")
		os.Exit(2)
	}

	var res any
	var err error
	if *calls {
		handshake.MagicCookieValue = "goecho"
		res, err = runCalls(*path, *mtls, callOpts)
	} else {
		res, err = run(*path, *n, *pings, *mtls)
	}
	plugin.CleanupClients() // never leave a plugin process behind
	if err != nil {
		fmt.Fprintln(os.Stderr, "refhost:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "refhost:", err)
		os.Exit(1)
	}
}
