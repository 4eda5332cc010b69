// Command gohello is a test plugin for plughost written directly against
// hashicorp/go-plugin, so the Python host is checked against the real Go
// server implementation rather than against our own reading of it.
//
// It serves one tiny gRPC service, hello.v1.Greeter/Greet, declared by hand
// with wrapperspb.StringValue messages so no protoc step is needed.
//
// Environment:
//
//	GOHELLO_COOKIE_KEY      magic cookie key (default PLUGHOST); the value must be "gohello"
//	GOHELLO_SUFFIX          appended to every Greet reply
//	GOHELLO_CRASH_AFTER_MS  log an error and exit(3) this many ms after start
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// greeterServer is the interface grpc.RegisterService checks the
// implementation against (ServiceDesc.HandlerType).
type greeterServer interface {
	Greet(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

type greeter struct{ suffix string }

func (g greeter) Greet(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String("hello, " + in.GetValue() + g.suffix), nil
}

// greeterDesc is what protoc-gen-go-grpc would generate for
// `service Greeter { rpc Greet(StringValue) returns (StringValue); }`.
var greeterDesc = grpc.ServiceDesc{
	ServiceName: "hello.v1.Greeter",
	HandlerType: (*greeterServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Greet",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			call := func(ctx context.Context, req any) (any, error) {
				return srv.(greeterServer).Greet(ctx, req.(*wrapperspb.StringValue))
			}
			if icpt == nil {
				return call(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/hello.v1.Greeter/Greet"}, call)
		},
	}},
	Metadata: "hello/v1/greeter.proto",
}

// greeterPlugin plugs the service into go-plugin. It must be a GRPCPlugin:
// go-plugin picks "grpc" for the handshake only when the plugin set holds one.
type greeterPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl greeter
}

func (p *greeterPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&greeterDesc, p.impl)
	return nil
}

func (p *greeterPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("gohello is server-only")
}

func main() {
	cookieKey := os.Getenv("GOHELLO_COOKIE_KEY")
	if cookieKey == "" {
		cookieKey = "PLUGHOST"
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "gohello", JSONFormat: true, Output: os.Stderr, Level: hclog.Debug,
	})

	if ms, err := strconv.Atoi(os.Getenv("GOHELLO_CRASH_AFTER_MS")); err == nil {
		time.AfterFunc(time.Duration(ms)*time.Millisecond, func() {
			logger.Error("gohello crashing on purpose", "after_ms", ms)
			os.Exit(3)
		})
	}

	// plugin.Serve swaps os.Stdout for its GRPCStdio pipe right after writing
	// the handshake line. Print only then: an earlier line would come before
	// the handshake on the real stdout, and go-plugin hosts read line one only.
	go func(orig *os.File) {
		for os.Stdout == orig {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("gohello: started")
	}(os.Stdout)

	logger.Info("gohello ready", "pid", os.Getpid())
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   cookieKey,
			MagicCookieValue: "gohello",
		},
		Plugins:    plugin.PluginSet{"greeter": &greeterPlugin{impl: greeter{suffix: os.Getenv("GOHELLO_SUFFIX")}}},
		GRPCServer: plugin.DefaultGRPCServer,
		Logger:     logger,
	})
}
