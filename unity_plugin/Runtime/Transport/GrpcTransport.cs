// The editor's transport: grpc-dotnet's call invoker over Cysharp's YetAnotherHttpHandler (HTTP/2 from native
// hyper + rustls, since Unity's own HttpClient has no HTTP/2). Messages cross as bytes with identity
// marshallers, so this file is the only one that sees a Grpc.* type, and the core's serialisation is the one the
// tests check against the live server. This assembly compiles only once Google.Protobuf, Grpc.Net.Client and
// YetAnotherHttpHandler are installed (versionDefines in AnyMoLe.Transport.asmdef; see the package README).
// Not compiled on the development machines (no grpc-dotnet there): written against grpc-dotnet 2.x's public API.
using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using AnyMoLe.Core;
using Cysharp.Net.Http;
using Grpc.Core;
using Grpc.Net.Client;

namespace AnyMoLe.Transport
{
    public sealed class GrpcTransport : IAnyMoLeTransport
    {
        static readonly Marshaller<byte[]> Bytes = Marshallers.Create(b => b, b => b);
        readonly GrpcChannel channel;
        readonly CallInvoker invoker;

        /// <param name="address">"host:port" (plain-text HTTP/2) or "https://host:port" (TLS).</param>
        /// <param name="receiveLimit">largest message received; the session asks the server to fit it.</param>
        /// <param name="rootCertificatesPem">PEM roots to trust for a TLS server with its own CA, or null.</param>
        public GrpcTransport(string address, int receiveLimit = 4 << 20, string rootCertificatesPem = null)
        {
            // Plain-text gRPC needs HTTP/2 without the TLS upgrade: YetAnotherHttpHandler only speaks it with Http2Only.
            var handler = new YetAnotherHttpHandler { Http2Only = true };
            if (!string.IsNullOrEmpty(rootCertificatesPem)) handler.RootCertificates = rootCertificatesPem;
            var uri = address.Contains("://") ? address : "http://" + address;
            channel = GrpcChannel.ForAddress(uri, new GrpcChannelOptions
            {
                HttpHandler = handler,
                DisposeHttpClient = true,
                MaxReceiveMessageSize = receiveLimit,
                MaxSendMessageSize = null,  // meshes go up in chunks, but a request may still exceed 4 MiB
            });
            invoker = channel.CreateCallInvoker();
        }

        public void Dispose()
        {
            channel.Dispose();
        }

        static Method<byte[], byte[]> MethodOf(MethodType type, string path)
        {
            // "/anymole.v1.AnyMoLeService/GetServerInfo" → service and method names.
            int slash = path.LastIndexOf('/');
            return new Method<byte[], byte[]>(type, path.Substring(1, slash - 1), path.Substring(slash + 1), Bytes, Bytes);
        }

        static CallOptions Options(IList<KeyValuePair<string, string>> metadata, CancellationToken cancel)
        {
            var headers = new Metadata();
            foreach (var kv in metadata) headers.Add(kv.Key, kv.Value);
            return new CallOptions(headers, null, cancel);
        }

        /// <summary>An RpcException as the core's error, with the field from grpc-status-details-bin.</summary>
        internal static AnyMoLeRpcException Convert(RpcException exc)
        {
            byte[] details = null;
            if (exc.Trailers != null)
                foreach (var entry in exc.Trailers)
                    if (entry.IsBinary && entry.Key == "grpc-status-details-bin") details = entry.ValueBytes;
            return AnyMoLeRpcException.FromStatus((int)exc.StatusCode, exc.Status.Detail, details);
        }

        public async Task<byte[]> UnaryAsync(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                             CancellationToken cancel)
        {
            try
            {
                using (var call = invoker.AsyncUnaryCall(MethodOf(MethodType.Unary, method), null, Options(metadata, cancel), request))
                    return await call.ResponseAsync;
            }
            catch (RpcException exc)
            {
                throw Convert(exc);
            }
        }

        public IResponseStream ServerStreaming(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                               CancellationToken cancel)
        {
            return new ServerStream(invoker.AsyncServerStreamingCall(
                MethodOf(MethodType.ServerStreaming, method), null, Options(metadata, cancel), request));
        }

        public IClientStreamCall ClientStreaming(string method, IList<KeyValuePair<string, string>> metadata,
                                                 CancellationToken cancel)
        {
            return new ClientStream(invoker.AsyncClientStreamingCall(
                MethodOf(MethodType.ClientStreaming, method), null, Options(metadata, cancel)));
        }

        sealed class ServerStream : IResponseStream
        {
            readonly AsyncServerStreamingCall<byte[]> call;

            public ServerStream(AsyncServerStreamingCall<byte[]> call) { this.call = call; }

            public async Task<byte[]> ReadAsync()
            {
                try
                {
                    return await call.ResponseStream.MoveNext(CancellationToken.None) ? call.ResponseStream.Current : null;
                }
                catch (RpcException exc)
                {
                    throw Convert(exc);
                }
            }

            public void Dispose() { call.Dispose(); }  // cancels the call if it still runs
        }

        sealed class ClientStream : IClientStreamCall
        {
            readonly AsyncClientStreamingCall<byte[], byte[]> call;
            readonly Task<byte[]> response;

            public ClientStream(AsyncClientStreamingCall<byte[], byte[]> call)
            {
                this.call = call;
                response = Converted(call.ResponseAsync);
            }

            static async Task<byte[]> Converted(Task<byte[]> task)
            {
                try
                {
                    return await task;
                }
                catch (RpcException exc)
                {
                    throw Convert(exc);
                }
            }

            public async Task WriteAsync(byte[] message)
            {
                if (response.IsCompleted) return;  // the server answered already (a cached upload)
                try
                {
                    await call.RequestStream.WriteAsync(message);
                }
                catch (RpcException) when (response.IsCompleted)
                {
                }
            }

            public async Task CompleteAsync()
            {
                if (response.IsCompleted) return;
                try
                {
                    await call.RequestStream.CompleteAsync();
                }
                catch (RpcException) when (response.IsCompleted)
                {
                }
            }

            public Task<byte[]> Response { get { return response; } }

            public void Dispose() { call.Dispose(); }
        }
    }
}
