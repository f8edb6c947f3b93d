// benchecho: the gRPC upstream of Portico's benchmarks (bench/run builds it).
//
// A grpc-go server (Debian's golang-google-grpc-dev, built in GOPATH mode) with a pass-through
// codec, so messages are raw bytes and no .proto/codegen is needed:
//
//	/portico.bench.Echo/Unary   unary: replies with the request message, byte for byte.
//	/portico.bench.Echo/Stream  server streaming: the request is 8 bytes, count and size as
//	                            big-endian uint32; the reply is count messages of size bytes.
//	/portico.bench.Echo/Active  unary: the number of Stream calls running now, as a big-endian
//	                            uint64 (the harness checks that an abandoned stream was cancelled).
//
// Prints "ready ADDR" on stdout once listening. Plain TCP (h2c with prior knowledge).
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	// data is owned by the transport only until Unmarshal returns.
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) String() string { return "raw" }

func unaryHandler(srv interface{}, ctx context.Context, dec func(interface{}) error,
	_ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return in, nil
}

var activeStreams int64

func activeHandler(srv interface{}, ctx context.Context, dec func(interface{}) error,
	_ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	out := make([]byte, 8)
	binary.BigEndian.PutUint64(out, uint64(atomic.LoadInt64(&activeStreams)))
	return out, nil
}

func streamHandler(srv interface{}, stream grpc.ServerStream) error {
	atomic.AddInt64(&activeStreams, 1)
	defer atomic.AddInt64(&activeStreams, -1)
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	if len(in) != 8 {
		return status.Errorf(codes.InvalidArgument, "want 8 bytes (count, size), got %d", len(in))
	}
	count := binary.BigEndian.Uint32(in[0:4])
	size := binary.BigEndian.Uint32(in[4:8])
	if size > 4<<20 {
		return status.Errorf(codes.InvalidArgument, "size %d over 4 MiB", size)
	}
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	for i := uint32(0); i < count; i++ {
		if err := stream.SendMsg(msg); err != nil {
			return err
		}
	}
	return nil
}

var echoService = grpc.ServiceDesc{
	ServiceName: "portico.bench.Echo",
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: unaryHandler},
		{MethodName: "Active", Handler: activeHandler},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Stream", Handler: streamHandler, ServerStreams: true},
	},
}

func main() {
	addr := flag.String("listen", "127.0.0.1:50151", "listen address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchecho:", err)
		os.Exit(1)
	}
	s := grpc.NewServer(grpc.CustomCodec(rawCodec{}), grpc.MaxRecvMsgSize(16<<20))
	s.RegisterService(&echoService, struct{}{})
	fmt.Printf("ready %s\n", lis.Addr())
	os.Stdout.Sync()
	if err := s.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "benchecho:", err)
		os.Exit(1)
	}
}
