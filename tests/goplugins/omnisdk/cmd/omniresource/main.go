// Command omniresource is an Omniview SDK plugin with a second capability,
// "resource", registered the way Omniview's own plugins do it (the Kubernetes
// plugin's resource.Register): resource.BuildResourceController from a
// ResourcePluginConfig, then p.RegisterCapability("resource",
// &v1plugin.GRPCPlugin{...}). It serves omniview.sdk.resource.v1.ResourcePlugin.
//
// The resource side is tiny and in memory: one connection, "local", and one
// resource type, "demo::v1::Widget", holding two widgets in namespace
// "default" ({"id": "w1", "name": "first"}, {"id": "w2", "name": "second"}).
// Get, List, Find, Create, Update and Delete work on that store, so a client
// can LoadConnections, StartConnection("local"), then List/Get widgets.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/omniviewdev/plugin-sdk/pkg/sdk"
	"github.com/omniviewdev/plugin-sdk/pkg/types"
	resource "github.com/omniviewdev/plugin-sdk/pkg/v1/resource"
	v1plugin "github.com/omniviewdev/plugin-sdk/pkg/v1/resource/plugin"
)

// store is the "client" of a connection: the widgets, by id.
type store struct {
	mu      sync.Mutex
	widgets map[string]map[string]any
}

func newStore() *store {
	return &store{widgets: map[string]map[string]any{
		"w1": {"id": "w1", "name": "first", "namespace": "default"},
		"w2": {"id": "w2", "name": "second", "namespace": "default"},
	}}
}

// connections implements resource.ConnectionProvider[store].
type connections struct{}

func (connections) CreateClient(context.Context) (*store, error) { return newStore(), nil }

func (connections) DestroyClient(context.Context, *store) error { return nil }

func (connections) LoadConnections(context.Context) ([]types.Connection, error) {
	return []types.Connection{{ID: "local", Name: "Local", Description: "In-memory widgets"}}, nil
}

func (connections) CheckConnection(_ context.Context, conn *types.Connection, _ *store) (types.ConnectionStatus, error) {
	return types.ConnectionStatus{Connection: conn, Status: types.ConnectionStatusConnected}, nil
}

func (connections) GetNamespaces(context.Context, *store) ([]string, error) {
	return []string{"default"}, nil
}

// widgets implements resource.Resourcer[store] on the in-memory store.
type widgets struct{}

func encode(w map[string]any) json.RawMessage {
	data, err := json.Marshal(w)
	if err != nil {
		panic(err)
	}
	return data
}

func (widgets) Get(_ context.Context, s *store, _ resource.ResourceMeta, in resource.GetInput) (*resource.GetResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.widgets[in.ID]
	if !ok {
		return nil, fmt.Errorf("widget %q not found", in.ID)
	}
	return &resource.GetResult{Result: encode(w), Success: true}, nil
}

func (widgets) sorted(s *store, match func(map[string]any) bool) []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.widgets))
	for id := range s.widgets {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := []json.RawMessage{}
	for _, id := range ids {
		if match(s.widgets[id]) {
			out = append(out, encode(s.widgets[id]))
		}
	}
	return out
}

func (r widgets) List(_ context.Context, s *store, _ resource.ResourceMeta, _ resource.ListInput) (*resource.ListResult, error) {
	items := r.sorted(s, func(map[string]any) bool { return true })
	return &resource.ListResult{Result: items, Success: true, TotalCount: len(items)}, nil
}

func (r widgets) Find(_ context.Context, s *store, _ resource.ResourceMeta, in resource.FindInput) (*resource.FindResult, error) {
	items := r.sorted(s, func(w map[string]any) bool {
		name, _ := w["name"].(string)
		return strings.Contains(name, in.TextQuery)
	})
	return &resource.FindResult{Result: items, Success: true, TotalCount: len(items)}, nil
}

func (widgets) put(s *store, data json.RawMessage, id string) (map[string]any, error) {
	w := map[string]any{}
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("widget: %w", err)
	}
	if id != "" {
		w["id"] = id
	}
	key, _ := w["id"].(string)
	if key == "" {
		return nil, fmt.Errorf("widget: an id is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.widgets[key] = w
	return w, nil
}

func (r widgets) Create(_ context.Context, s *store, _ resource.ResourceMeta, in resource.CreateInput) (*resource.CreateResult, error) {
	w, err := r.put(s, in.Input, "")
	if err != nil {
		return nil, err
	}
	return &resource.CreateResult{Result: encode(w), Success: true}, nil
}

func (r widgets) Update(_ context.Context, s *store, _ resource.ResourceMeta, in resource.UpdateInput) (*resource.UpdateResult, error) {
	w, err := r.put(s, in.Input, in.ID)
	if err != nil {
		return nil, err
	}
	return &resource.UpdateResult{Result: encode(w), Success: true}, nil
}

func (widgets) Delete(_ context.Context, s *store, _ resource.ResourceMeta, in resource.DeleteInput) (*resource.DeleteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.widgets[in.ID]
	if !ok {
		return nil, fmt.Errorf("widget %q not found", in.ID)
	}
	delete(s.widgets, in.ID)
	return &resource.DeleteResult{Result: encode(w), Success: true}, nil
}

var widgetMeta = resource.ResourceMeta{
	Group:       "demo",
	Version:     "v1",
	Kind:        "Widget",
	Label:       "Widget",
	Description: "An in-memory widget",
	Category:    "Demo",
}

func main() {
	p := sdk.NewPlugin(sdk.PluginOpts{ID: "omniresource"})

	controller, err := resource.BuildResourceController(context.Background(), resource.ResourcePluginConfig[store]{
		Connections: connections{},
		Resources: []resource.ResourceRegistration[store]{{
			Meta:      widgetMeta,
			Resourcer: widgets{},
			Definition: &resource.ResourceDefinition{
				IDAccessor:        "id",
				NamespaceAccessor: "namespace",
				ColumnDefs: []resource.ColumnDefinition{
					{ID: "name", Header: "Name", Accessors: "name"},
				},
			},
		}},
		Groups: []resource.ResourceGroup{{
			ID:          "demo",
			Name:        "Demo",
			Description: "Demo resources",
			Resources:   map[string][]resource.ResourceMeta{"v1": {widgetMeta}},
		}},
	})
	if err != nil {
		panic(fmt.Sprintf("failed to build resource controller: %v", err))
	}
	p.RegisterCapability("resource", &v1plugin.GRPCPlugin{
		Impl:             controller,
		SettingsProvider: p.SettingsProvider,
	})
	p.Serve()
}
