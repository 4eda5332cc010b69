package main

// The SDK's .proto files, written as descriptors so that no protoc step or
// generated code is needed. Only names, field numbers and types matter on
// the wire; they follow the SDK's proto/v1/lifecycle/lifecycle.proto, its
// older proto/lifecycle.proto, and proto/v1/settings/settings.proto.

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	_ "google.golang.org/protobuf/types/known/emptypb" // registers google/protobuf/empty.proto
)

type fdp = descriptorpb.FieldDescriptorProto

func field(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string) *fdp {
	f := &fdp{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum()}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

func scalar(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type) *fdp {
	return field(name, num, typ, descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL, "")
}

func message(name string, fields ...*fdp) *descriptorpb.DescriptorProto {
	return &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields}
}

// emptyRPC is `rpc name(google.protobuf.Empty) returns (output)`.
func emptyRPC(name, output string) *descriptorpb.MethodDescriptorProto {
	return &descriptorpb.MethodDescriptorProto{
		Name:       proto.String(name),
		InputType:  proto.String(".google.protobuf.Empty"),
		OutputType: proto.String(output),
	}
}

func file(pkg, path string, msgs []*descriptorpb.DescriptorProto, enums []*descriptorpb.EnumDescriptorProto, svc *descriptorpb.ServiceDescriptorProto) *descriptorpb.FileDescriptorProto {
	return &descriptorpb.FileDescriptorProto{
		Name:        proto.String(path),
		Package:     proto.String(pkg),
		Syntax:      proto.String("proto3"),
		Dependency:  []string{"google/protobuf/empty.proto"},
		MessageType: msgs,
		EnumType:    enums,
		Service:     []*descriptorpb.ServiceDescriptorProto{svc},
	}
}

// lifecycleProto is PluginLifecycle in package pkg, registered under file
// path (what server reflection reports). The v1 enum values are
// SERVING_STATUS_*; the legacy package used bare UNKNOWN/SERVING/NOT_SERVING.
func lifecycleProto(pkg, path, enumPrefix string) *descriptorpb.FileDescriptorProto {
	const (
		str  = descriptorpb.FieldDescriptorProto_TYPE_STRING
		i32  = descriptorpb.FieldDescriptorProto_TYPE_INT32
		enum = descriptorpb.FieldDescriptorProto_TYPE_ENUM
		rep  = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	)
	status := &descriptorpb.EnumDescriptorProto{Name: proto.String("ServingStatus")}
	for i, v := range []string{"UNKNOWN", "SERVING", "NOT_SERVING"} {
		status.Value = append(status.Value, &descriptorpb.EnumValueDescriptorProto{
			Name: proto.String(enumPrefix + v), Number: proto.Int32(int32(i)),
		})
	}
	p := "." + pkg + "." // fully qualified type-name prefix
	return file(pkg, path,
		[]*descriptorpb.DescriptorProto{
			message("GetInfoResponse", scalar("plugin_id", 1, str), scalar("version", 2, str), scalar("sdk_protocol_version", 3, i32)),
			message("GetCapabilitiesResponse", field("capabilities", 1, str, rep, "")),
			message("HealthCheckResponse", field("status", 1, enum, descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL, p+"ServingStatus")),
		},
		[]*descriptorpb.EnumDescriptorProto{status},
		&descriptorpb.ServiceDescriptorProto{
			Name: proto.String("PluginLifecycle"),
			Method: []*descriptorpb.MethodDescriptorProto{
				emptyRPC("GetInfo", p+"GetInfoResponse"),
				emptyRPC("GetCapabilities", p+"GetCapabilitiesResponse"),
				emptyRPC("HealthCheck", p+"HealthCheckResponse"),
			},
		})
}

// settingsProto is the subset of omniview.sdk.settings.v1 that omnihello
// serves: ListSettings, whose reply (map<string, Setting> settings = 1) is
// always empty here, so the message is declared without fields.
var settingsProto = file("omniview.sdk.settings.v1", "proto/v1/settings/settings.proto",
	[]*descriptorpb.DescriptorProto{message("ListSettingsResponse")},
	nil,
	&descriptorpb.ServiceDescriptorProto{
		Name:   proto.String("SettingsPlugin"),
		Method: []*descriptorpb.MethodDescriptorProto{emptyRPC("ListSettings", ".omniview.sdk.settings.v1.ListSettingsResponse")},
	})

// mustFile builds a descriptor and registers it globally, so go-plugin's
// server reflection can describe the services too.
func mustFile(fd *descriptorpb.FileDescriptorProto) protoreflect.FileDescriptor {
	f, err := protodesc.NewFile(fd, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	if err := protoregistry.GlobalFiles.RegisterFile(f); err != nil {
		panic(err)
	}
	return f
}
