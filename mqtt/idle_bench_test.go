package mqtt_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// BenchmarkIdleConnection reports the Go memory (heap and goroutine stacks)
// one idle, connected MQTT client costs, over 2000 connections (B/conn),
// and the goroutines each keeps (goroutines/conn: 0 once idle connections
// park, see idle_linux.go). The client ends are bare sockets in this
// process, so their few hundred bytes of net.Conn are in the figure too;
// kernel socket buffers are not.
func BenchmarkIdleConnection(b *testing.B) {
	e := startEnv(b, 1, nil)
	addr := e.addr(0)
	const n = 2000
	measure := func() (float64, float64) {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		conns := make([]net.Conn, 0, n)
		for i := 0; i < n; i++ {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, nc)
			buf, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311,
				ClientID: fmt.Sprintf("idle-%d", i), CleanStart: true, KeepAlive: 600}, packet.V311)
			if _, err := nc.Write(buf); err != nil {
				b.Fatal(err)
			}
			var ack [4]byte
			if _, err := nc.Read(ack[:]); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&after)
		gs := float64(runtime.NumGoroutine()-g0) / n
		b.Logf("heap %d B/conn, stack %d B/conn, goroutines %d",
			(int64(after.HeapInuse)-int64(before.HeapInuse))/n, (int64(after.StackInuse)-int64(before.StackInuse))/n, runtime.NumGoroutine())
		per := float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / n
		for _, c := range conns {
			c.Close()
		}
		time.Sleep(500 * time.Millisecond)
		return per, gs
	}
	for i := 0; i < b.N; i++ {
		connected, gs := measure()
		b.ReportMetric(connected, "B/conn")
		b.ReportMetric(gs, "goroutines/conn")
	}
}
