// Reads the field a server error names from google.rpc.Status details. Decoded by hand (a few tags) rather than
// with generated google.rpc classes, which other Unity packages (Google.Api.CommonProtos) may also define.
using System;
using Google.Protobuf;

namespace AnyMoLe.Core
{
    static class StatusDetails
    {
        const string BadRequestType = "type.googleapis.com/google.rpc.BadRequest";
        const string PreconditionType = "type.googleapis.com/google.rpc.PreconditionFailure";

        /// <summary>The first BadRequest field violation's field, or the first PreconditionFailure violation's
        /// subject; "" when the details name none or cannot be read.</summary>
        public static string BlamedField(byte[] status)
        {
            if (status == null || status.Length == 0) return "";
            try
            {
                // google.rpc.Status: 3 = repeated Any details; Any: 1 = type_url, 2 = value.
                foreach (var any in Fields(status, 3))
                {
                    string type = "";
                    byte[] value = null;
                    var input = new CodedInputStream(any);
                    uint tag;
                    while ((tag = input.ReadTag()) != 0)
                    {
                        if (tag == 10) type = input.ReadString();
                        else if (tag == 18) value = input.ReadBytes().ToByteArray();
                        else input.SkipLastField();
                    }
                    if (value == null) continue;
                    // BadRequest: 1 = FieldViolation {1 field}; PreconditionFailure: 1 = Violation {2 subject}.
                    int wanted = type == BadRequestType ? 1 : type == PreconditionType ? 2 : 0;
                    if (wanted == 0) continue;
                    foreach (var violation in Fields(value, 1))
                        foreach (var name in Fields(violation, wanted))
                            return System.Text.Encoding.UTF8.GetString(name);
                }
            }
            catch (InvalidProtocolBufferException)
            {
            }
            return "";
        }

        static System.Collections.Generic.IEnumerable<byte[]> Fields(byte[] message, int number)
        {
            var input = new CodedInputStream(message);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                if (tag == (uint)(number << 3 | 2)) yield return input.ReadBytes().ToByteArray();
                else input.SkipLastField();
            }
        }
    }
}
