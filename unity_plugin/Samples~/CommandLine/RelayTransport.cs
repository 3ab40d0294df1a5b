// IAnyMoLeTransport through scripts/unity_relay.py: the relay runs as a child process and makes the gRPC calls
// with grpcio; serialised messages cross its stdin/stdout unchanged, so the core's own bytes reach a live server.
// Frame: u32 big-endian length of the rest, u8 kind, u32 call id, payload (see the relay's docstring).
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using AnyMoLe.Core;

namespace AnyMoLe.Relay
{
    public sealed class RelayTransport : IAnyMoLeTransport
    {
        const byte Start = 0x01, Message = 0x02, HalfClose = 0x03, CancelCall = 0x04;
        const byte RMessage = 0x10, REnd = 0x11, RHello = 0x20;
        const byte Unary = 0, ServerStream = 1, ClientStream = 2;

        readonly Process process;
        readonly Stream stdin;
        readonly object writeLock = new object();
        readonly ConcurrentDictionary<uint, Call> calls = new ConcurrentDictionary<uint, Call>();
        readonly TaskCompletionSource<string> hello = new TaskCompletionSource<string>();
        int nextId;

        /// <summary>The server the relay reaches ("host:port"), once it said so.</summary>
        public string Target { get { return hello.Task.Result; } }

        /// <param name="python">the Python that runs the relay (the repository's .venv).</param>
        /// <param name="relayScript">scripts/unity_relay.py</param>
        /// <param name="arguments">"--target HOST:PORT" or "--serve", plus options.</param>
        public RelayTransport(string python, string relayScript, string arguments)
        {
            var psi = new ProcessStartInfo(python, "\"" + relayScript + "\" " + arguments)
            {
                UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true,
            };
            process = Process.Start(psi);
            stdin = process.StandardInput.BaseStream;
            var reader = new Thread(() => ReadLoop(process.StandardOutput.BaseStream)) { IsBackground = true };
            reader.Start();
            if (!hello.Task.Wait(TimeSpan.FromSeconds(180)))
                throw new TimeoutException("the relay (" + relayScript + ") did not start within 3 minutes");
        }

        /// <summary>The repository's relay with the repository's Python: ANYMOLE_PYTHON and ANYMOLE_RELAY when set
        /// (scripts/test_unity.sh sets both), else .venv/bin/python and scripts/unity_relay.py under
        /// <paramref name="repo"/>.</summary>
        public static RelayTransport Launch(string repo, string arguments)
        {
            var python = Environment.GetEnvironmentVariable("ANYMOLE_PYTHON") ?? Path.Combine(repo, ".venv/bin/python");
            var script = Environment.GetEnvironmentVariable("ANYMOLE_RELAY") ?? Path.Combine(repo, "scripts/unity_relay.py");
            return new RelayTransport(python, script, arguments);
        }

        public void Dispose()
        {
            try
            {
                stdin.Close();  // the relay ends when its stdin closes
                if (!process.WaitForExit(15000)) process.Kill();
            }
            catch (InvalidOperationException)
            {
            }
            process.Dispose();
        }

        void Send(byte kind, uint id, byte[] payload)
        {
            payload = payload ?? new byte[0];
            var head = new byte[9];
            WriteU32(head, 0, (uint)payload.Length + 5);
            head[4] = kind;
            WriteU32(head, 5, id);
            lock (writeLock)
            {
                try
                {
                    stdin.Write(head, 0, 9);
                    stdin.Write(payload, 0, payload.Length);
                    stdin.Flush();
                }
                catch (IOException exc)
                {
                    throw new AnyMoLeRpcException(RpcCode.Unavailable, "the relay process ended: " + exc.Message, "");
                }
            }
        }

        void ReadLoop(Stream stdout)
        {
            try
            {
                var head = new byte[9];
                while (ReadExactly(stdout, head, 9))
                {
                    int length = (int)ReadU32(head, 0) - 5;
                    byte kind = head[4];
                    uint id = ReadU32(head, 5);
                    var payload = new byte[length];
                    if (!ReadExactly(stdout, payload, length)) break;
                    if (kind == RHello) { hello.TrySetResult(Encoding.UTF8.GetString(payload)); continue; }
                    Call call;
                    if (!calls.TryGetValue(id, out call)) continue;
                    if (kind == RMessage) call.OnMessage(payload);
                    else if (kind == REnd)
                    {
                        calls.TryRemove(id, out call);
                        call.OnEnd(ParseEnd(payload));
                    }
                }
            }
            catch (IOException)
            {
            }
            var gone = new AnyMoLeRpcException(RpcCode.Unavailable, "the relay process ended", "");
            hello.TrySetException(gone);
            foreach (var c in calls.Values) c.OnEnd(gone);
        }

        static AnyMoLeRpcException ParseEnd(byte[] p)
        {
            int code = (int)ReadU32(p, 0);
            int n = (int)ReadU32(p, 4);
            var message = Encoding.UTF8.GetString(p, 8, n);
            int dn = (int)ReadU32(p, 8 + n);
            var details = new byte[dn];
            Array.Copy(p, 12 + n, details, 0, dn);
            return code == 0 ? null : AnyMoLeRpcException.FromStatus(code, message, details);
        }

        Call Open(byte kind, string method, IList<KeyValuePair<string, string>> metadata, CancellationToken cancel)
        {
            var id = (uint)Interlocked.Increment(ref nextId);
            var call = new Call(this, id);
            calls[id] = call;
            var body = new MemoryStream();
            body.WriteByte(kind);
            WriteString(body, method);
            body.WriteByte((byte)(metadata.Count >> 8));
            body.WriteByte((byte)metadata.Count);
            foreach (var kv in metadata)
            {
                WriteString(body, kv.Key);
                WriteString(body, kv.Value);
            }
            Send(Start, id, body.ToArray());
            if (cancel.CanBeCanceled) call.Registration = cancel.Register(call.Cancel);
            return call;
        }

        public Task<byte[]> UnaryAsync(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                       CancellationToken cancel)
        {
            var call = Open(Unary, method, metadata, cancel);
            Send(Message, call.Id, request);
            return call.Single.Task;
        }

        public IResponseStream ServerStreaming(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                               CancellationToken cancel)
        {
            var call = Open(ServerStream, method, metadata, cancel);
            Send(Message, call.Id, request);
            return call;
        }

        public IClientStreamCall ClientStreaming(string method, IList<KeyValuePair<string, string>> metadata,
                                                 CancellationToken cancel)
        {
            return Open(ClientStream, method, metadata, cancel);
        }

        /// <summary>One call's state: responses queue up for ReadAsync; the end completes the waiters.</summary>
        sealed class Call : IResponseStream, IClientStreamCall
        {
            readonly RelayTransport owner;
            public readonly uint Id;
            public readonly TaskCompletionSource<byte[]> Single = new TaskCompletionSource<byte[]>();
            readonly Queue<byte[]> responses = new Queue<byte[]>();
            readonly SemaphoreSlim available = new SemaphoreSlim(0);
            AnyMoLeRpcException error;
            bool ended;
            public CancellationTokenRegistration Registration;

            public Call(RelayTransport owner, uint id)
            {
                this.owner = owner;
                Id = id;
            }

            public void OnMessage(byte[] payload)
            {
                lock (responses) responses.Enqueue(payload);
                available.Release();
                Single.TrySetResult(payload);
            }

            public void OnEnd(AnyMoLeRpcException exc)
            {
                lock (responses)
                {
                    error = exc;
                    ended = true;
                }
                available.Release();
                if (exc != null) Single.TrySetException(exc);
                else Single.TrySetException(new AnyMoLeRpcException(RpcCode.Internal, "the call ended without a response", ""));
            }

            public void Cancel()
            {
                owner.Send(CancelCall, Id, null);
            }

            public async Task<byte[]> ReadAsync()
            {
                await available.WaitAsync();
                lock (responses)
                {
                    if (responses.Count > 0) return responses.Dequeue();
                    available.Release();  // the end stays signalled for later reads
                    if (error != null) throw error;
                    return null;
                }
            }

            public Task WriteAsync(byte[] message)
            {
                lock (responses) if (ended) return Task.FromResult(0);  // the server answered already
                owner.Send(Message, Id, message);
                return Task.FromResult(0);
            }

            public Task CompleteAsync()
            {
                lock (responses) if (ended) return Task.FromResult(0);
                owner.Send(HalfClose, Id, null);
                return Task.FromResult(0);
            }

            public Task<byte[]> Response { get { return Single.Task; } }

            public void Dispose()
            {
                Registration.Dispose();
                bool open;
                lock (responses) open = !ended;
                if (open) Cancel();
            }
        }

        static bool ReadExactly(Stream s, byte[] buf, int n)
        {
            int got = 0;
            while (got < n)
            {
                int r = s.Read(buf, got, n - got);
                if (r <= 0) return false;
                got += r;
            }
            return true;
        }

        static void WriteU32(byte[] b, int o, uint v)
        {
            b[o] = (byte)(v >> 24); b[o + 1] = (byte)(v >> 16); b[o + 2] = (byte)(v >> 8); b[o + 3] = (byte)v;
        }

        static uint ReadU32(byte[] b, int o)
        {
            return (uint)(b[o] << 24 | b[o + 1] << 16 | b[o + 2] << 8 | b[o + 3]);
        }

        static void WriteString(Stream s, string text)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            s.WriteByte((byte)(bytes.Length >> 8));
            s.WriteByte((byte)bytes.Length);
            s.Write(bytes, 0, bytes.Length);
        }
    }
}
