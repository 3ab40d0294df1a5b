// A transport that plays back recorded server exchanges (tests/data/streams/, written by
// scripts/record_streams.py from the real server): each call the session makes takes the next recording, which
// must be of the same method, and gets its responses and final status. What the session sent is kept for the
// test to compare with the recorded requests.
using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace AnyMoLe.Core
{
    /// <summary>One recorded call: its method path, the response messages and how it ended.</summary>
    public sealed class RecordedCall
    {
        public string Method = "";
        public List<byte[]> Responses = new List<byte[]>();
        public int StatusCode;
        public string StatusMessage = "";
        /// <summary>The serialised google.rpc.Status of an error with details, or null.</summary>
        public byte[] StatusDetails;

        /// <summary>The messages of a gRPC length-prefixed byte sequence (flag byte 0, u32 big-endian length, message).</summary>
        public static List<byte[]> ReadFramed(byte[] data)
        {
            var messages = new List<byte[]>();
            for (int i = 0; i < data.Length;)
            {
                if (data[i] != 0 || i + 5 > data.Length)
                    throw new FormatException("not a sequence of uncompressed gRPC messages at byte " + i);
                int n = data[i + 1] << 24 | data[i + 2] << 16 | data[i + 3] << 8 | data[i + 4];
                var m = new byte[n];
                Array.Copy(data, i + 5, m, 0, n);
                messages.Add(m);
                i += 5 + n;
            }
            return messages;
        }
    }

    public sealed class ReplayTransport : IAnyMoLeTransport
    {
        readonly Queue<RecordedCall> calls;
        /// <summary>The calls the session made, in order: method path and the request messages it wrote.</summary>
        public readonly List<KeyValuePair<string, List<byte[]>>> Sent = new List<KeyValuePair<string, List<byte[]>>>();

        public ReplayTransport(IEnumerable<RecordedCall> recording)
        {
            calls = new Queue<RecordedCall>(recording);
        }

        /// <summary>Recorded calls the session has not made.</summary>
        public int Remaining { get { return calls.Count; } }

        public void Dispose() { }

        RecordedCall Next(string method, List<byte[]> requests)
        {
            Sent.Add(new KeyValuePair<string, List<byte[]>>(method, requests));
            if (calls.Count == 0)
                throw new InvalidOperationException("the session called " + method + " after the end of the recording");
            var call = calls.Dequeue();
            if (call.Method != method)
                throw new InvalidOperationException("the session called " + method + " where the recording has " + call.Method);
            return call;
        }

        static AnyMoLeRpcException Error(RecordedCall call)
        {
            return call.StatusCode == 0 ? null : AnyMoLeRpcException.FromStatus(call.StatusCode, call.StatusMessage, call.StatusDetails);
        }

        public Task<byte[]> UnaryAsync(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                       CancellationToken cancel)
        {
            var call = Next(method, new List<byte[]> { request });
            var tcs = new TaskCompletionSource<byte[]>();
            if (Error(call) != null) tcs.SetException(Error(call));
            else tcs.SetResult(call.Responses[0]);
            return tcs.Task;
        }

        public IResponseStream ServerStreaming(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                               CancellationToken cancel)
        {
            return new Stream(Next(method, new List<byte[]> { request }), cancel);
        }

        public IClientStreamCall ClientStreaming(string method, IList<KeyValuePair<string, string>> metadata,
                                                 CancellationToken cancel)
        {
            var requests = new List<byte[]>();
            return new Upload(Next(method, requests), requests);
        }

        sealed class Stream : IResponseStream
        {
            readonly RecordedCall call;
            readonly CancellationToken cancel;
            int next;

            public Stream(RecordedCall call, CancellationToken cancel)
            {
                this.call = call;
                this.cancel = cancel;
            }

            public Task<byte[]> ReadAsync()
            {
                var tcs = new TaskCompletionSource<byte[]>();
                if (cancel.IsCancellationRequested)
                    tcs.SetException(new AnyMoLeRpcException(RpcCode.Cancelled, "cancelled by the client", ""));
                else if (next < call.Responses.Count) tcs.SetResult(call.Responses[next++]);
                else if (Error(call) != null) tcs.SetException(Error(call));
                else tcs.SetResult(null);
                return tcs.Task;
            }

            public void Dispose() { }
        }

        /// <summary>A recorded upload answers when the session half-closes, as a protocol 1.2 server does.</summary>
        sealed class Upload : IClientStreamCall
        {
            readonly RecordedCall call;
            readonly List<byte[]> requests;
            readonly TaskCompletionSource<byte[]> response = new TaskCompletionSource<byte[]>();

            public Upload(RecordedCall call, List<byte[]> requests)
            {
                this.call = call;
                this.requests = requests;
            }

            public Task WriteAsync(byte[] message)
            {
                requests.Add(message);
                return Task.FromResult(0);
            }

            public Task CompleteAsync()
            {
                Finish();
                return Task.FromResult(0);
            }

            void Finish()
            {
                if (response.Task.IsCompleted) return;
                if (Error(call) != null) response.SetException(Error(call));
                else response.SetResult(call.Responses[0]);
            }

            public Task<byte[]> Response { get { return response.Task; } }

            public void Dispose() { }
        }
    }
}
