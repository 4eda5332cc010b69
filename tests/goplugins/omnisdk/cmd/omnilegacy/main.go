// Command omnilegacy stands in for a plugin built with an older release of
// Omniview's Go SDK, for the host's lifecycle fallback (docs/protocol.md,
// "The lifecycle service").
// The current SDK (v0.5.0) always serves omniview.sdk.lifecycle.v1; older
// releases served the same messages as com.omniview.pluginsdk.PluginLifecycle,
// and the oldest had no lifecycle service at all.
//
// It is built from the real SDK's pieces: its plugin.yaml loader and handshake
// (config.PluginMeta, GenerateHandshakeConfig: OMNIVIEW=<id>), and the
// generated code of the legacy protos it still ships (package
// github.com/omniviewdev/plugin-sdk/proto), served with go-plugin as the SDK
// does. What the older releases' Serve did is reproduced here, not imported.
//
// OMNILEGACY_LIFECYCLE = legacy (default): com.omniview.pluginsdk.PluginLifecycle
// and com.omniview.pluginsdk.SettingsPlugin (ListSettings only, empty);
// none: the settings service only. Anything else: message on stderr, exit 2.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-plugin"
	"github.com/omniviewdev/plugin-sdk/pkg/config"
	legacypb "github.com/omniviewdev/plugin-sdk/proto"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

const pluginID = "omnilegacy"

type lifecycle struct {
	legacypb.UnimplementedPluginLifecycleServer
	meta config.PluginMeta
}

func (l *lifecycle) GetInfo(context.Context, *emptypb.Empty) (*legacypb.GetInfoResponse, error) {
	return &legacypb.GetInfoResponse{PluginId: l.meta.ID, Version: l.meta.Version, SdkProtocolVersion: 1}, nil
}

func (l *lifecycle) GetCapabilities(context.Context, *emptypb.Empty) (*legacypb.GetCapabilitiesResponse, error) {
	return &legacypb.GetCapabilitiesResponse{Capabilities: []string{"settings"}}, nil
}

func (l *lifecycle) HealthCheck(context.Context, *emptypb.Empty) (*legacypb.HealthCheckResponse, error) {
	return &legacypb.HealthCheckResponse{Status: legacypb.ServingStatus_SERVING}, nil
}

type settingsServer struct {
	legacypb.UnimplementedSettingsPluginServer
}

func (settingsServer) ListSettings(context.Context, *emptypb.Empty) (*legacypb.ListSettingsResponse, error) {
	return &legacypb.ListSettingsResponse{}, nil
}

// grpcPlugin is one entry of the go-plugin map, as each SDK capability is.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

func (g *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	g.register(s)
	return nil
}

func (g *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("%s is server-only", pluginID)
}

func loadMeta() config.PluginMeta {
	home, err := os.UserHomeDir()
	if err != nil {
		panic(err)
	}
	f, err := os.Open(filepath.Join(home, ".omniview", "plugins", pluginID, "plugin.yaml"))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	var meta config.PluginMeta
	if err := meta.Load(f); err != nil {
		panic(err)
	}
	return meta
}

func main() {
	mode := os.Getenv("OMNILEGACY_LIFECYCLE")
	if mode != "" && mode != "legacy" && mode != "none" {
		fmt.Fprintf(os.Stderr, "omnilegacy: OMNILEGACY_LIFECYCLE=%q: want legacy or none\n", mode)
		os.Exit(2)
	}
	meta := loadMeta()
	plugins := plugin.PluginSet{
		"settings": &grpcPlugin{register: func(s *grpc.Server) {
			legacypb.RegisterSettingsPluginServer(s, settingsServer{})
		}},
	}
	if mode != "none" {
		plugins["lifecycle"] = &grpcPlugin{register: func(s *grpc.Server) {
			legacypb.RegisterPluginLifecycleServer(s, &lifecycle{meta: meta})
		}}
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  meta.GenerateHandshakeConfig(),
		VersionedPlugins: map[int]plugin.PluginSet{1: plugins},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}
