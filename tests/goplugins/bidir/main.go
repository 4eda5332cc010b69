// Command gobidir is a test plugin for plughost written like go-plugin's own
// examples/bidirectional: a Counter whose Put calls back into a service the
// host serves through go-plugin's GRPCBroker. It also serves a service of its
// own through the broker, so the host's side of Dial is exercised too.
//
// Services are declared by hand with well-known messages (no protoc):
//
//	counter.v1.Counter/Put(google.protobuf.Struct{key, value, add_server}) -> google.protobuf.Empty
//	    dials broker id add_server (the host's AddHelper), calls
//	    counter.v1.AddHelper/Sum(Struct{a: stored, b: value}) -> Int64Value
//	    and stores the result under key.
//	counter.v1.Counter/Get(StringValue key) -> Int64Value
//	counter.v1.Counter/Announce(Empty) -> UInt32Value
//	    broker.NextId(), then broker.AcceptAndServe(id, counter.v1.Echo);
//	    returns the id for the host to Dial.
//	counter.v1.Echo/Echo(StringValue) -> StringValue   (brokered only)
//	    "echo: <value>", plus " [tls]" when the caller came over TLS.
//
// Cookie: PLUGHOST=gobidir.
package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// unary builds a grpc.MethodDesc for a hand-declared unary method: what
// protoc-gen-go-grpc would generate, without the generated code.
func unary[Req proto.Message, Resp proto.Message](service, method string, newReq func() Req, call func(srv any, ctx context.Context, req Req) (Resp, error)) grpc.MethodDesc {
	full := "/" + service + "/" + method
	return grpc.MethodDesc{
		MethodName: method,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := newReq()
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(ctx context.Context, req any) (any, error) { return call(srv, ctx, req.(Req)) }
			if icpt == nil {
				return handler(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, handler)
		},
	}
}

// -- counter.v1.Counter (served on the plugin's main gRPC server) -------------------

type counterServer interface {
	Put(context.Context, *structpb.Struct) (*emptypb.Empty, error)
	Get(context.Context, *wrapperspb.StringValue) (*wrapperspb.Int64Value, error)
	Announce(context.Context, *emptypb.Empty) (*wrapperspb.UInt32Value, error)
}

var counterDesc = grpc.ServiceDesc{
	ServiceName: "counter.v1.Counter",
	HandlerType: (*counterServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("counter.v1.Counter", "Put", func() *structpb.Struct { return new(structpb.Struct) },
			func(srv any, ctx context.Context, in *structpb.Struct) (*emptypb.Empty, error) {
				return srv.(counterServer).Put(ctx, in)
			}),
		unary("counter.v1.Counter", "Get", func() *wrapperspb.StringValue { return new(wrapperspb.StringValue) },
			func(srv any, ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
				return srv.(counterServer).Get(ctx, in)
			}),
		unary("counter.v1.Counter", "Announce", func() *emptypb.Empty { return new(emptypb.Empty) },
			func(srv any, ctx context.Context, in *emptypb.Empty) (*wrapperspb.UInt32Value, error) {
				return srv.(counterServer).Announce(ctx, in)
			}),
	},
	Metadata: "counter/v1/counter.proto",
}

// -- counter.v1.Echo (served by the plugin through the broker) ----------------------

type echoServer interface {
	Echo(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "counter.v1.Echo",
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("counter.v1.Echo", "Echo", func() *wrapperspb.StringValue { return new(wrapperspb.StringValue) },
			func(srv any, ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
				return srv.(echoServer).Echo(ctx, in)
			}),
	},
	Metadata: "counter/v1/counter.proto",
}

type echo struct{}

func (echo) Echo(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	reply := "echo: " + in.GetValue()
	if p, ok := peer.FromContext(ctx); ok {
		if _, isTLS := p.AuthInfo.(credentials.TLSInfo); isTLS {
			reply += " [tls]"
		}
	}
	return wrapperspb.String(reply), nil
}

// -- counter.v1.AddHelper (served by the host; the plugin is its client) ------------

func sum(ctx context.Context, conn *grpc.ClientConn, a, b int64) (int64, error) {
	req, err := structpb.NewStruct(map[string]any{"a": a, "b": b})
	if err != nil {
		return 0, err
	}
	out := new(wrapperspb.Int64Value)
	if err := conn.Invoke(ctx, "/counter.v1.AddHelper/Sum", req, out); err != nil {
		return 0, err
	}
	return out.GetValue(), nil
}

// -- the counter ---------------------------------------------------------------------

type counter struct {
	broker *plugin.GRPCBroker
	logger hclog.Logger

	mu     sync.Mutex
	values map[string]int64
}

func brokerID(in *structpb.Struct, field string) (uint32, error) {
	v, ok := in.GetFields()[field]
	if !ok {
		return 0, status.Errorf(codes.InvalidArgument, "%s is missing", field)
	}
	n := v.GetNumberValue()
	if n < 1 || n > math.MaxUint32 || n != math.Trunc(n) {
		return 0, status.Errorf(codes.InvalidArgument, "%s %v is not a broker id", field, n)
	}
	return uint32(n), nil
}

func (c *counter) Put(ctx context.Context, in *structpb.Struct) (*emptypb.Empty, error) {
	key := in.GetFields()["key"].GetStringValue()
	value := int64(in.GetFields()["value"].GetNumberValue())
	id, err := brokerID(in, "add_server")
	if err != nil {
		return nil, err
	}
	// As in go-plugin's examples/bidirectional: Dial the id the host announced.
	conn, err := c.broker.Dial(id)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "broker dial %d: %v", id, err)
	}
	defer func() { _ = conn.Close() }()

	c.mu.Lock()
	current := c.values[key]
	c.mu.Unlock()
	r, err := sum(ctx, conn, current, value)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "AddHelper.Sum over broker id %d: %v", id, err)
	}
	c.mu.Lock()
	c.values[key] = r
	c.mu.Unlock()
	c.logger.Info("put", "key", key, "value", value, "result", r, "broker_id", id)
	return &emptypb.Empty{}, nil
}

func (c *counter) Get(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return wrapperspb.Int64(c.values[in.GetValue()]), nil
}

func (c *counter) Announce(context.Context, *emptypb.Empty) (*wrapperspb.UInt32Value, error) {
	id := c.broker.NextId()
	// AcceptAndServe blocks until the broker closes; its Accept sends the
	// announcement {id, network, address} over the broker stream.
	go c.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(opts...)
		s.RegisterService(&echoDesc, echo{})
		return s
	})
	c.logger.Info("announce", "broker_id", id)
	return wrapperspb.UInt32(id), nil
}

// counterPlugin plugs the service into go-plugin, which hands it the broker.
type counterPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	logger hclog.Logger
}

func (p *counterPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&counterDesc, &counter{broker: broker, logger: p.logger, values: map[string]int64{}})
	return nil
}

func (p *counterPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("gobidir is server-only")
}

func main() {
	logger := hclog.New(&hclog.LoggerOptions{
		Name: "gobidir", JSONFormat: true, Output: os.Stderr, Level: hclog.Debug,
	})
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "PLUGHOST",
			MagicCookieValue: "gobidir",
		},
		Plugins:    plugin.PluginSet{"counter": &counterPlugin{logger: logger}},
		GRPCServer: plugin.DefaultGRPCServer,
		Logger:     logger,
	})
}
