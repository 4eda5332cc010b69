// Command omnihello behaves, on the wire, like the smallest plugin built
// with Omniview's Go SDK (github.com/omniviewdev/plugin-sdk): a main() that
// calls sdk.NewPlugin(sdk.PluginOpts{ID: "omnihello"}).Serve().
//
// The SDK module itself cannot be fetched from the Go module proxy here, so
// this program re-creates its observable behaviour with go-plugin directly;
// tests/goplugins/README.md lists each SDK fact it mirrors. In short:
//
//   - plugin.yaml is read from $HOME/.omniview/plugins/<id>/plugin.yaml at
//     start, and a missing file is a panic, as in sdk.NewPlugin;
//   - the magic cookie is OMNIVIEW=<id from plugin.yaml>;
//   - the app protocol version is plugin.yaml's sdk_protocol_version, else 1;
//   - it serves omniview.sdk.lifecycle.v1.PluginLifecycle and the settings
//     capability, omniview.sdk.settings.v1.SettingsPlugin (ListSettings only).
//
// OMNIHELLO_LIFECYCLE (v1 | legacy | both | none, default v1) changes which
// lifecycle service names are served, so a host's fallback can be tested;
// "legacy" is the older SDK's com.omniview.pluginsdk.PluginLifecycle.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"gopkg.in/yaml.v3"
)

const pluginID = "omnihello" // what the author would pass as PluginOpts.ID

// meta is the part of plugin.yaml the SDK's Serve path uses.
type meta struct {
	ID                 string `yaml:"id"`
	Version            string `yaml:"version"`
	SDKProtocolVersion int    `yaml:"sdk_protocol_version"`
}

func loadMeta(id string) meta {
	home, err := os.UserHomeDir()
	if err != nil {
		panic(err)
	}
	f, err := os.Open(filepath.Join(home, ".omniview", "plugins", id, "plugin.yaml"))
	if err != nil {
		if os.IsNotExist(err) {
			panic("plugin.yaml not found") // the SDK's own message
		}
		panic(err)
	}
	defer f.Close()
	var m meta
	if err := yaml.NewDecoder(f).Decode(&m); err != nil {
		panic(err)
	}
	if m.ID == "" {
		panic("plugin ID must be set")
	}
	return m
}

// service is one gRPC service of unary Empty -> message methods. It is also
// a go-plugin GRPCPlugin, the way the SDK puts each capability in its map.
type service struct {
	plugin.NetRPCUnsupportedPlugin
	desc    protoreflect.ServiceDescriptor
	methods map[string]func() proto.Message
}

func (s *service) GRPCServer(_ *plugin.GRPCBroker, srv *grpc.Server) error {
	name := string(s.desc.FullName())
	sd := grpc.ServiceDesc{ServiceName: name, Metadata: s.desc.ParentFile().Path()}
	for method, reply := range s.methods {
		info := &grpc.UnaryServerInfo{FullMethod: "/" + name + "/" + method}
		sd.Methods = append(sd.Methods, grpc.MethodDesc{
			MethodName: method,
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				// Every method here takes google.protobuf.Empty; decoding into
				// an empty message accepts (and drops) any fields sent.
				in := dynamicpb.NewMessage(s.desc.Methods().ByName(protoreflect.Name(method)).Input())
				if err := dec(in); err != nil {
					return nil, err
				}
				call := func(context.Context, any) (any, error) { return reply(), nil }
				if icpt == nil {
					return call(ctx, in)
				}
				return icpt(ctx, in, info, call)
			},
		})
	}
	// A nil implementation skips grpc's HandlerType check; handlers close over s.
	srv.RegisterService(&sd, nil)
	return nil
}

func (s *service) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("omnihello is server-only")
}

// lifecycle builds the PluginLifecycle service under one of its two names.
func lifecycle(fd protoreflect.FileDescriptor, m meta, version int, caps []string) *service {
	msg := func(name string) *dynamicpb.Message {
		return dynamicpb.NewMessage(fd.Messages().ByName(protoreflect.Name(name)))
	}
	return &service{
		desc: fd.Services().ByName("PluginLifecycle"),
		methods: map[string]func() proto.Message{
			"GetInfo": func() proto.Message {
				r := msg("GetInfoResponse")
				set(r, "plugin_id", protoreflect.ValueOfString(m.ID))
				set(r, "version", protoreflect.ValueOfString(m.Version))
				set(r, "sdk_protocol_version", protoreflect.ValueOfInt32(int32(version)))
				return r
			},
			"GetCapabilities": func() proto.Message {
				r := msg("GetCapabilitiesResponse")
				list := r.Mutable(r.Descriptor().Fields().ByName("capabilities")).List()
				for _, c := range caps {
					list.Append(protoreflect.ValueOfString(c))
				}
				return r
			},
			"HealthCheck": func() proto.Message {
				r := msg("HealthCheckResponse")
				set(r, "status", protoreflect.ValueOfEnum(1)) // SERVING
				return r
			},
		},
	}
}

func set(m *dynamicpb.Message, field string, v protoreflect.Value) {
	m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(field)), v)
}

func main() {
	m := loadMeta(pluginID)
	version := 1 // sdk.CurrentProtocolVersion
	if m.SDKProtocolVersion > 0 {
		version = m.SDKProtocolVersion
	}

	settingsFile := mustFile(settingsProto)
	plugins := plugin.PluginSet{
		// sdk.NewPlugin always registers the settings capability.
		"settings": &service{
			desc: settingsFile.Services().ByName("SettingsPlugin"),
			methods: map[string]func() proto.Message{
				// No settings declared: the SDK answers an empty map, which
				// is the empty message on the wire.
				"ListSettings": func() proto.Message {
					return dynamicpb.NewMessage(settingsFile.Messages().ByName("ListSettingsResponse"))
				},
			},
		},
	}
	caps := []string{"settings"} // sorted plugin-map keys, before "lifecycle" is added

	mode := os.Getenv("OMNIHELLO_LIFECYCLE")
	switch mode {
	case "", "v1", "legacy", "both", "none":
	default:
		fmt.Fprintf(os.Stderr, "omnihello: OMNIHELLO_LIFECYCLE=%q: want v1, legacy, both or none\n", mode)
		os.Exit(2)
	}
	if mode == "" || mode == "v1" || mode == "both" {
		plugins["lifecycle"] = lifecycle(mustFile(lifecycleProto("omniview.sdk.lifecycle.v1", "proto/v1/lifecycle/lifecycle.proto", "SERVING_STATUS_")), m, version, caps)
	}
	if mode == "legacy" || mode == "both" {
		plugins["lifecycle-legacy"] = lifecycle(mustFile(lifecycleProto("com.omniview.pluginsdk", "proto/lifecycle.proto", "")), m, version, caps)
	}

	// Like the SDK: no Logger, so go-plugin logs JSON at trace level to stderr.
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "OMNIVIEW", MagicCookieValue: m.ID},
		VersionedPlugins: map[int]plugin.PluginSet{version: plugins},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}
