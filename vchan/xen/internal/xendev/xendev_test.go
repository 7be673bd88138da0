package xendev

import (
	"bytes"
	"testing"
	"unsafe"
)

// The expected values are those of docs/../spec (xen-devices.md §1.1 and
// §2-4), computed there from the Linux and Xen headers with gcc on x86-64.
func TestRequestNumbers(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"IOCTL_EVTCHN_BIND_INTERDOMAIN", EvtchnBindInterdomain, 0x00084501},
		{"IOCTL_EVTCHN_BIND_UNBOUND_PORT", EvtchnBindUnboundPort, 0x00044502},
		{"IOCTL_EVTCHN_UNBIND", EvtchnUnbind, 0x00044503},
		{"IOCTL_EVTCHN_NOTIFY", EvtchnNotify, 0x00044504},
		{"IOCTL_EVTCHN_RESET", EvtchnReset, 0x00004505},
		{"IOCTL_GNTDEV_MAP_GRANT_REF", GntdevMapGrantRef, 0x00184700},
		{"IOCTL_GNTDEV_UNMAP_GRANT_REF", GntdevUnmapGrantRef, 0x00104701},
		{"IOCTL_GNTDEV_SET_UNMAP_NOTIFY", GntdevSetUnmapNotify, 0x00104707},
		{"IOCTL_GNTALLOC_ALLOC_GREF", GntallocAllocGref, 0x00184705},
		{"IOCTL_GNTALLOC_DEALLOC_GREF", GntallocDeallocGref, 0x00104706},
		{"IOCTL_GNTALLOC_SET_UNMAP_NOTIFY", GntallocSetUnmapNotify, 0x00104707},
		// Not used, but a check that Ioc encodes like _IOC.
		{"IOCTL_EVTCHN_RESTRICT_DOMID", Ioc(IocNone, 'E', 6, 2), 0x00024506},
		{"IOCTL_GNTDEV_DMABUF_EXP_WAIT_RELEASED", Ioc(IocNone, 'G', 10, 8), 0x0008470a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%s = %#08x, want %#08x", tc.name, tc.got, tc.want)
			}
		})
	}
}

func TestIocRejectsOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		name               string
		dir, typ, nr, size uintptr
	}{
		{"dir", 4, 'E', 0, 0},
		{"type", 0, 0x100, 0, 0},
		{"nr", 0, 'E', 0x100, 0},
		{"size", 0, 'E', 0, 1 << 14},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Ioc(%d, %#x, %d, %d) did not panic", tc.dir, tc.typ, tc.nr, tc.size)
				}
			}()
			Ioc(tc.dir, tc.typ, tc.nr, tc.size)
		})
	}
}

func TestStructLayout(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof ioctl_evtchn_bind_interdomain", unsafe.Sizeof(evtchnBindInterdomain{}), 8},
		{"sizeof ioctl_evtchn_bind_unbound_port", unsafe.Sizeof(evtchnBindUnboundPort{}), 4},
		{"sizeof ioctl_evtchn_unbind", unsafe.Sizeof(evtchnUnbind{}), 4},
		{"sizeof ioctl_evtchn_notify", unsafe.Sizeof(evtchnNotify{}), 4},
		{"bind_interdomain.remote_domain", OffBindInterdomainRemoteDomain, unsafe.Offsetof(evtchnBindInterdomain{}.RemoteDomain)},
		{"bind_interdomain.remote_port", OffBindInterdomainRemotePort, 4},
		{"bind_interdomain.remote_port (mirror)", unsafe.Offsetof(evtchnBindInterdomain{}.RemotePort), 4},

		{"sizeof ioctl_gntalloc_alloc_gref", unsafe.Sizeof(gntallocAllocGref{}), 24},
		{"alloc_gref.domid", OffAllocDomid, 0},
		{"alloc_gref.flags", OffAllocFlags, 2},
		{"alloc_gref.flags (mirror)", unsafe.Offsetof(gntallocAllocGref{}.Flags), 2},
		{"alloc_gref.count", OffAllocCount, 4},
		{"alloc_gref.count (mirror)", unsafe.Offsetof(gntallocAllocGref{}.Count), 4},
		{"alloc_gref.index", OffAllocIndex, 8},
		{"alloc_gref.index (mirror)", unsafe.Offsetof(gntallocAllocGref{}.Index), 8},
		{"alloc_gref.gref_ids", OffAllocGrefIDs, 16},
		{"alloc_gref.gref_ids (mirror)", unsafe.Offsetof(gntallocAllocGref{}.GrefIDs), 16},

		{"sizeof ioctl_gntalloc_dealloc_gref", unsafe.Sizeof(gntallocDeallocGref{}), 16},
		{"dealloc_gref.index", OffDeallocIndex, 0},
		{"dealloc_gref.count", OffDeallocCount, 8},
		{"dealloc_gref.count (mirror)", unsafe.Offsetof(gntallocDeallocGref{}.Count), 8},

		{"sizeof unmap_notify", unsafe.Sizeof(unmapNotify{}), 16},
		{"unmap_notify.index", OffNotifyIndex, 0},
		{"unmap_notify.action", OffNotifyAction, 8},
		{"unmap_notify.action (mirror)", unsafe.Offsetof(unmapNotify{}.Action), 8},
		{"unmap_notify.event_channel_port", OffNotifyPort, 12},
		{"unmap_notify.event_channel_port (mirror)", unsafe.Offsetof(unmapNotify{}.Port), 12},

		{"sizeof ioctl_gntdev_grant_ref", unsafe.Sizeof(gntdevGrantRef{}), 8},
		{"sizeof ioctl_gntdev_grant_ref (const)", SizeofRef, 8},
		{"grant_ref.domid", OffRefDomid, 0},
		{"grant_ref.ref", OffRefRef, 4},
		{"grant_ref.ref (mirror)", unsafe.Offsetof(gntdevGrantRef{}.Ref), 4},
		{"sizeof ioctl_gntdev_map_grant_ref", unsafe.Sizeof(gntdevMapGrantRef{}), 24},
		{"map_grant_ref.count", OffMapCount, 0},
		{"map_grant_ref.index", OffMapIndex, 8},
		{"map_grant_ref.index (mirror)", unsafe.Offsetof(gntdevMapGrantRef{}.Index), 8},
		{"map_grant_ref.refs", OffMapRefs, 16},
		{"map_grant_ref.refs (mirror)", unsafe.Offsetof(gntdevMapGrantRef{}.Refs), 16},
		{"sizeof ioctl_gntdev_unmap_grant_ref", unsafe.Sizeof(gntdevUnmapGrantRef{}), 16},
		{"unmap_grant_ref.index", OffUnmapIndex, 0},
		{"unmap_grant_ref.count", OffUnmapCount, 8},
		{"unmap_grant_ref.count (mirror)", unsafe.Offsetof(gntdevUnmapGrantRef{}.Count), 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
			}
		})
	}
	if GntallocFlagWritable != 1 || UnmapNotifyClearByte != 1 || UnmapNotifySendEvent != 2 || DomidFirstReserved != 0x7ff0 {
		t.Errorf("flag constants differ from the spec")
	}
}

// le builds expected little-endian bytes from (offset, size, value) triples.
func le(n int, fields ...uint64) []byte {
	b := make([]byte, n)
	for i := 0; i+2 < len(fields); i += 3 {
		off, size, v := int(fields[i]), int(fields[i+1]), fields[i+2]
		for j := range size {
			b[off+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"alloc 1 page", AllocGrefArg(5, GntallocFlagWritable, 1), le(24, 0, 2, 5, 2, 2, 1, 4, 4, 1)},
		{"alloc 4 pages", AllocGrefArg(0x1234, 0, 4), le(32, 0, 2, 0x1234, 4, 4, 4)},
		{"map 1 ref", MapGrantRefArg(7, []uint32{0x99}), le(24, 0, 4, 1, 16, 4, 7, 20, 4, 0x99)},
		{"map 2 refs", MapGrantRefArg(3, []uint32{10, 11}), le(32, 0, 4, 2, 16, 4, 3, 20, 4, 10, 24, 4, 3, 28, 4, 11)},
		{"dealloc/unmap", IndexCountArg(0x3000, 2), le(16, 0, 8, 0x3000, 8, 4, 2)},
		{"unmap notify", UnmapNotifyArg(0x2015, 3, 42), le(16, 0, 8, 0x2015, 8, 4, 3, 12, 4, 42)},
		{"bind interdomain", BindInterdomainArg(9, 77), le(8, 0, 4, 9, 4, 4, 77)},
		{"bind unbound", BindUnboundPortArg(9), le(4, 0, 4, 9)},
		{"port", PortArg(13), le(4, 0, 4, 13)},
		{"ports", PortsBytes(1, 0x01020304), le(8, 0, 4, 1, 4, 4, 0x01020304)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Equal(tc.got, tc.want) {
				t.Errorf("got  % x\nwant % x", tc.got, tc.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	b := AllocGrefArg(1, 1, 3)
	copy(b[OffAllocIndex:], le(8, 0, 8, 0x5000))
	copy(b[OffAllocGrefIDs:], le(12, 0, 4, 100, 4, 4, 101, 8, 4, 102))
	index, refs := ParseAllocGref(b, 3)
	if index != 0x5000 || len(refs) != 3 || refs[0] != 100 || refs[1] != 101 || refs[2] != 102 {
		t.Errorf("ParseAllocGref = %#x %v", index, refs)
	}
	ps := ParsePorts(le(9, 0, 4, 5, 4, 4, 6))
	if len(ps) != 2 || ps[0] != 5 || ps[1] != 6 {
		t.Errorf("ParsePorts = %v, want [5 6] (trailing byte ignored)", ps)
	}
}
