package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
)

// pipeSize is the pipe splice moves the file's pages through: 1 MiB, where the kernel's default
// is 64 KiB (and sendfile's own internal pipe 16 pages).
const pipeSize = 1 << 20

// spliceCopier moves the file into the socket with splice(2), file → pipe → socket, without
// copying it through user space. net/http has no such path (a file given to the connection's
// ReadFrom goes to sendfile), so it takes the connection over: it writes the answer's head
// itself and closes the connection after the body.
func spliceCopier() (copier, bool) { return copier{name: "splice", copy: spliceCopy}, true }

func spliceCopy(w http.ResponseWriter, _ *http.Request, f *os.File, size int64) error {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return err
	}
	defer conn.Close()
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return errors.New("splice: not a TCP connection")
	}
	fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size)
	if err := brw.Flush(); err != nil {
		return err
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	chunk := int64(64 << 10)
	const fSetPipeSz = 1031 // F_SETPIPE_SZ
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[1]), fSetPipeSz, pipeSize); e == 0 {
		chunk = pipeSize
	}
	src := int(f.Fd())
	var off int64
	for off < size {
		// Into the pipe: blocking, which is fine, as the pipe is empty after every round.
		n, err := syscall.Splice(src, &off, p[1], nil, int(min(size-off, chunk)), spliceMove|spliceMore)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("splice from the file: %w", err)
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		// Out of the pipe into the non-blocking socket: raw.Write waits for room when the
		// function reports it is not done.
		left := n
		var werr error
		if err := raw.Write(func(fd uintptr) bool {
			for left > 0 {
				m, err := syscall.Splice(p[0], nil, int(fd), nil, int(left), spliceMove|spliceMore|spliceNonblock)
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					return false
				case err != nil:
					werr = err
					return true
				}
				left -= m
			}
			return true
		}); err != nil {
			return err
		}
		if werr != nil {
			return fmt.Errorf("splice to the socket: %w", werr)
		}
	}
	return nil
}

// splice(2) flags.
const (
	spliceMove     = 0x1
	spliceNonblock = 0x2
	spliceMore     = 0x4
)
