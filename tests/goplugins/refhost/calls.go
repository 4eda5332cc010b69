package main

// The -calls mode: the Go side of bench/calls.py. One goecho plugin started
// with go-plugin's client; then, on its gRPC connection:
//
//	unary_us    latency of each of -unary sequential Echo calls (one caller);
//	parallel    -parallel Echo calls shared by -callers goroutines: wall time;
//	stream      one Stream call of -stream messages: wall time to the last one.
//
// Output, one JSON line:
//
//	{"unary_us":[...],"parallel":{"callers":16,"calls":4000,"seconds":0.1},
//	 "stream":{"messages":20000,"seconds":0.05}}

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	echoMethod   = "/echo.v1.Echo/Echo"
	streamMethod = "/echo.v1.Echo/Stream"
)

type callOptions struct {
	unary, callers, parallel, stream, payload, warmup int
}

var callOpts callOptions

type parallelResult struct {
	Callers int     `json:"callers"`
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
}

type streamResult struct {
	Messages int     `json:"messages"`
	Seconds  float64 `json:"seconds"`
}

type callsResult struct {
	UnaryUS  []float64      `json:"unary_us"`
	Parallel parallelResult `json:"parallel"`
	Stream   streamResult   `json:"stream"`
}

func echoOnce(conn *grpc.ClientConn, req *wrapperspb.BytesValue) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := new(wrapperspb.BytesValue)
	if err := conn.Invoke(ctx, echoMethod, req, out); err != nil {
		return err
	}
	if len(out.GetValue()) != len(req.GetValue()) {
		return fmt.Errorf("echo returned %d bytes, sent %d", len(out.GetValue()), len(req.GetValue()))
	}
	return nil
}

func runCalls(path string, mtls bool, o callOptions) (*callsResult, error) {
	c, rpc, err := start(path, mtls)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	defer c.Kill()
	conn := rpc.(*plugin.GRPCClient).Conn
	req := wrapperspb.Bytes(make([]byte, o.payload))
	res := &callsResult{UnaryUS: make([]float64, 0, o.unary)}

	for i := 0; i < o.warmup; i++ {
		if err := echoOnce(conn, req); err != nil {
			return nil, fmt.Errorf("warmup %d: %w", i, err)
		}
	}

	for i := 0; i < o.unary; i++ {
		t0 := time.Now()
		if err := echoOnce(conn, req); err != nil {
			return nil, fmt.Errorf("unary %d: %w", i, err)
		}
		res.UnaryUS = append(res.UnaryUS, float64(time.Since(t0).Nanoseconds())/1000)
	}

	// Callers take calls from a shared counter until -parallel have been made.
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.callers)
	t0 := time.Now()
	for w := 0; w < o.callers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(o.parallel) {
				if err := echoOnce(conn, req); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	res.Parallel = parallelResult{Callers: o.callers, Calls: o.parallel, Seconds: time.Since(t0).Seconds()}
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("parallel: %w", err)
	}

	n, secs, err := streamOnce(conn, o.stream)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	res.Stream = streamResult{Messages: n, Seconds: secs}
	return res, nil
}

func streamOnce(conn *grpc.ClientConn, n int) (int, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	desc := &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true}
	stream, err := conn.NewStream(ctx, desc, streamMethod)
	if err != nil {
		return 0, 0, err
	}
	if err := stream.SendMsg(wrapperspb.UInt32(uint32(n))); err != nil {
		return 0, 0, err
	}
	if err := stream.CloseSend(); err != nil {
		return 0, 0, err
	}
	got := 0
	for {
		msg := new(wrapperspb.BytesValue)
		err := stream.RecvMsg(msg)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return got, 0, err
		}
		got++
	}
	secs := time.Since(t0).Seconds()
	if got != n {
		return got, secs, fmt.Errorf("received %d of %d messages", got, n)
	}
	return got, secs, nil
}
