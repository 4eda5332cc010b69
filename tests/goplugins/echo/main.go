// Command goecho is the plugin of plughost's call benchmark (bench/calls.py),
// written directly against hashicorp/go-plugin like gohello.
//
// It serves echo.v1.Echo, declared by hand with wrapperspb messages so no
// protoc step is needed:
//
//	service Echo {
//	  rpc Echo(google.protobuf.BytesValue) returns (google.protobuf.BytesValue);
//	  rpc Stream(google.protobuf.UInt32Value) returns (stream google.protobuf.BytesValue);
//	}
//
// Echo returns its request; Stream sends n messages of StreamPayload bytes.
// Cookie: PLUGHOST=goecho.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// StreamPayload is the size of every message Stream sends.
const StreamPayload = 64

// echoServer is the interface grpc.RegisterService checks the implementation
// against (ServiceDesc.HandlerType).
type echoServer interface {
	Echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	Stream(*wrapperspb.UInt32Value, grpc.ServerStream) error
}

type echo struct{ chunk *wrapperspb.BytesValue }

func (echo) Echo(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return in, nil
}

func (e echo) Stream(in *wrapperspb.UInt32Value, stream grpc.ServerStream) error {
	for i := uint32(0); i < in.GetValue(); i++ {
		if err := stream.SendMsg(e.chunk); err != nil {
			return err
		}
	}
	return nil
}

// echoDesc is what protoc-gen-go-grpc would generate for the service above.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "echo.v1.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			call := func(ctx context.Context, req any) (any, error) {
				return srv.(echoServer).Echo(ctx, req.(*wrapperspb.BytesValue))
			}
			if icpt == nil {
				return call(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/echo.v1.Echo/Echo"}, call)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			in := new(wrapperspb.UInt32Value)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			return srv.(echoServer).Stream(in, stream)
		},
	}},
	Metadata: "echo/v1/echo.proto",
}

// echoPlugin plugs the service into go-plugin (a GRPCPlugin, so the handshake
// says "grpc").
type echoPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl echo
}

func (p *echoPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&echoDesc, p.impl)
	return nil
}

func (p *echoPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("goecho is server-only")
}

func main() {
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "goecho", JSONFormat: true, Output: os.Stderr, Level: hclog.Info,
	})
	chunk := wrapperspb.Bytes(make([]byte, StreamPayload))
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "PLUGHOST",
			MagicCookieValue: "goecho",
		},
		Plugins:    plugin.PluginSet{"echo": &echoPlugin{impl: echo{chunk: chunk}}},
		GRPCServer: plugin.DefaultGRPCServer,
		Logger:     logger,
	})
}
