#!/usr/bin/python3
"""A real RTSP server for the daemon's network-camera tests: GStreamer's
gst-rtsp-server (Debian: gir1.2-gst-rtsp-server-1.0, python3-gi,
gstreamer1.0-plugins-{base,good,ugly}) streaming H.264 of a test pattern.

    rtsp_server.py PORT WIDTH HEIGHT FPS [USER PASSWORD]

Serves rtsp://127.0.0.1:PORT/test over RTSP/TCP interleaved (and UDP) with
SMPTE colour bars (seven 100 % bars, white to blue, so a test can check
the decoded colours). With USER and PASSWORD the mount needs Basic
authentication. Prints "ready PORT" on stdout once it is listening and
serves until killed. Kill it and start it again on the same port to play a
server restart.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    port, width, height, fps = sys.argv[1:5]
    creds = sys.argv[5:7]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # key-int-max: a key frame each second, so a reconnecting client
    # decodes within a second; zerolatency: no B-frames, no lookahead.
    factory.set_launch(
        "( videotestsrc is-live=true pattern=smpte "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    if creds:
        user, password = creds
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server.py: cannot listen on 127.0.0.1:{port}")
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
