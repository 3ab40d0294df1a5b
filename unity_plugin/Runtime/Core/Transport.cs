// The one seam between the session logic and the network: calls by method path, with serialised messages.
// The editor's transport is grpc-dotnet (Runtime/Transport); tests here use a relay to a live server or a
// replay of recorded streams. The core never sees a Grpc.* type, so it builds without a gRPC runtime.
using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace AnyMoLe.Core
{
    /// <summary>A gRPC channel as the session needs it: unary, server-streaming and client-streaming calls
    /// of serialised protobuf messages. Failed calls throw <see cref="AnyMoLeRpcException"/>.</summary>
    public interface IAnyMoLeTransport : IDisposable
    {
        /// <summary>One request, one response (e.g. "/anymole.v1.AnyMoLeService/GetServerInfo").</summary>
        Task<byte[]> UnaryAsync(string method, byte[] request, IList<KeyValuePair<string, string>> metadata,
                                CancellationToken cancel);

        /// <summary>One request, a stream of responses. Dispose the stream to cancel the call.</summary>
        IResponseStream ServerStreaming(string method, byte[] request,
                                        IList<KeyValuePair<string, string>> metadata, CancellationToken cancel);

        /// <summary>A stream of requests, one response.</summary>
        IClientStreamCall ClientStreaming(string method, IList<KeyValuePair<string, string>> metadata,
                                          CancellationToken cancel);
    }

    /// <summary>The responses of a server-streaming call, in order.</summary>
    public interface IResponseStream : IDisposable
    {
        /// <summary>The next response, or null when the call ended with OK; throws the call's error.</summary>
        Task<byte[]> ReadAsync();
    }

    /// <summary>The requests of a client-streaming call and its one response.</summary>
    public interface IClientStreamCall : IDisposable
    {
        Task WriteAsync(byte[] message);
        /// <summary>No more requests (half-close).</summary>
        Task CompleteAsync();
        /// <summary>Completes when the server answers, which may be before the last request was written.</summary>
        Task<byte[]> Response { get; }
    }

    /// <summary>The gRPC status codes the session tells apart (same numbers as google.rpc.Code).</summary>
    public enum RpcCode
    {
        Ok = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
        AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9, Aborted = 10,
        OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14, DataLoss = 15, Unauthenticated = 16,
    }

    /// <summary>A failed call: its status code, the server's message verbatim, and the request field the
    /// server blames (from the status's BadRequest or PreconditionFailure detail), if any.</summary>
    public sealed class AnyMoLeRpcException : Exception
    {
        public RpcCode Code { get; private set; }
        public string Detail { get; private set; }
        /// <summary>The offending field, e.g. "keyframes[2].rotations"; empty when none is named.</summary>
        public string Field { get; private set; }

        public AnyMoLeRpcException(RpcCode code, string detail, string field)
            : base(Describe(code, detail, field))
        {
            Code = code;
            Detail = detail ?? "";
            Field = field ?? "";
        }

        /// <summary>From a status and its serialised google.rpc.Status details (grpc-status-details-bin).</summary>
        public static AnyMoLeRpcException FromStatus(int code, string detail, byte[] statusDetails)
        {
            return new AnyMoLeRpcException((RpcCode)code, detail, StatusDetails.BlamedField(statusDetails));
        }

        static string Describe(RpcCode code, string detail, string field)
        {
            var where = string.IsNullOrEmpty(field) ? "" : " [" + field + "]";
            return code + where + ": " + detail;
        }
    }
}
