// Every protobuf <-> domain conversion of the core, in one place. The session calls it; nothing above sees
// a generated type.
using System;
using System.Collections.Generic;
using System.Linq;
using Google.Protobuf;
using pb = Anymole.V1;

namespace AnyMoLe.Core
{
    public static class ProtoConvert
    {
        public static pb.CharacterAsset ToProto(Character c)
        {
            var asset = new pb.CharacterAsset { Name = c.Name ?? "", Skeleton = ToProto(c.Skeleton) };
            var m = c.Mesh;
            if (m != null)
            {
                var mesh = new pb.SkinnedMesh { InfluencesPerVertex = (uint)m.InfluencesPerVertex };
                mesh.Positions.Add(m.Positions);
                mesh.Normals.Add(m.Normals);
                mesh.Uvs.Add(m.Uvs);
                mesh.TriangleIndices.Add(m.Triangles.Select(i => (uint)i));
                mesh.JointIndices.Add(m.JointIndices.Select(i => (uint)i));
                mesh.JointWeights.Add(m.JointWeights);
                mesh.InverseBindMatrices.Add(m.InverseBindMatrices);
                mesh.Colors.Add(m.Colors);
                foreach (var t in m.Textures)
                    mesh.Textures.Add(new pb.Texture { MimeType = t.MimeType, Data = ByteString.CopyFrom(t.Data) });
                foreach (var mat in m.Materials)
                {
                    var entry = new pb.Material { Name = mat.Name ?? "" };
                    entry.BaseColor.Add(mat.BaseColor);
                    if (mat.Texture >= 0) entry.Texture = (uint)mat.Texture;
                    mesh.Materials.Add(entry);
                }
                mesh.TriangleMaterials.Add(m.TriangleMaterials.Select(i => (uint)i));
                asset.Mesh = mesh;
            }
            return asset;
        }

        public static Character FromProto(pb.CharacterAsset asset)
        {
            var c = new Character { Name = asset.Name, Skeleton = FromProto(asset.Skeleton ?? new pb.Skeleton()) };
            var m = asset.Mesh;
            if (m != null)
            {
                c.Mesh = new SkinnedMesh
                {
                    Positions = m.Positions.ToArray(),
                    Normals = m.Normals.ToArray(),
                    Uvs = m.Uvs.ToArray(),
                    Triangles = m.TriangleIndices.Select(i => (int)i).ToArray(),
                    InfluencesPerVertex = (int)m.InfluencesPerVertex,
                    JointIndices = m.JointIndices.Select(i => (int)i).ToArray(),
                    JointWeights = m.JointWeights.ToArray(),
                    InverseBindMatrices = m.InverseBindMatrices.ToArray(),
                    Colors = m.Colors.ToArray(),
                    TriangleMaterials = m.TriangleMaterials.Select(i => (int)i).ToArray(),
                };
                foreach (var t in m.Textures) c.Mesh.Textures.Add(new Texture { MimeType = t.MimeType, Data = t.Data.ToByteArray() });
                foreach (var mat in m.Materials)
                    c.Mesh.Materials.Add(new Material { Name = mat.Name, BaseColor = mat.BaseColor.ToArray(), Texture = mat.HasTexture ? (int)mat.Texture : -1 });
                if (m.Materials.Count == 0 && (m.BaseColor.Count > 0 || m.Texture != null))
                {
                    // A protocol 1.1 mesh: its one material in base_color and texture.
                    var only = new Material { BaseColor = m.BaseColor.ToArray() };
                    if (m.Texture != null)
                    {
                        only.Texture = 0;
                        c.Mesh.Textures.Add(new Texture { MimeType = m.Texture.MimeType, Data = m.Texture.Data.ToByteArray() });
                    }
                    c.Mesh.Materials.Add(only);
                }
            }
            return c;
        }

        public static pb.Skeleton ToProto(Skeleton s)
        {
            var p = new pb.Skeleton();
            p.JointNames.Add(s.Names);
            p.ParentIndices.Add(s.Parents);
            p.RestTranslations.Add(s.RestTranslations);
            p.RestRotations.Add(s.RestRotations);
            return p;
        }

        public static Skeleton FromProto(pb.Skeleton p)
        {
            return new Skeleton
            {
                Names = p.JointNames.ToArray(),
                Parents = p.ParentIndices.ToArray(),
                RestTranslations = p.RestTranslations.ToArray(),
                RestRotations = p.RestRotations.ToArray(),
            };
        }

        public static pb.Clip ToProto(Motion m)
        {
            var clip = new pb.Clip { Fps = m.Fps, FrameCount = (uint)m.FrameCount };
            clip.Rotations.Add(m.Rotations);
            clip.RootTranslations.Add(m.RootTranslations);
            if (m.Translations != null) clip.Translations.Add(m.Translations);
            return clip;
        }

        /// <summary>A clip of <paramref name="joints"/> joints (0: inferred from its size).</summary>
        public static Motion FromProto(pb.Clip clip, int joints)
        {
            int f = (int)clip.FrameCount;
            if (joints == 0 && f > 0) joints = clip.Rotations.Count / (4 * f);
            return new Motion
            {
                Fps = clip.Fps,
                FrameCount = f,
                JointCount = joints,
                Rotations = clip.Rotations.ToArray(),
                RootTranslations = clip.RootTranslations.ToArray(),
                Translations = clip.Translations.Count == 0 ? null : clip.Translations.ToArray(),
            };
        }

        /// <param name="receiveLimit">the largest message this client receives: motion events are sized to it.</param>
        public static pb.InbetweenRequest ToProto(FillRequest r, int receiveLimit)
        {
            var req = new pb.InbetweenRequest
            {
                CharacterId = r.CharacterId,
                Context = ToProto(r.Context),
                TotalFrames = (uint)r.TotalFrames,
                Method = r.Method ?? "",
                Preset = r.Preset ?? "",
                ChunkFrames = (uint)r.ChunkFrames,
                Seed = r.Seed,
                Label = r.Label ?? "",
                MaxReceiveMessageBytes = (uint)receiveLimit,
            };
            req.ClientTags.Add(r.ClientTags);
            foreach (var k in r.Keyframes)
            {
                var key = new pb.Keyframe { Frame = (uint)k.Frame };
                key.Rotations.Add(k.Rotations);
                key.RootTranslation.Add(k.RootTranslation);
                if (k.Translations != null) key.Translations.Add(k.Translations);
                req.Keyframes.Add(key);
            }
            return req;
        }

        public static ServerInfo FromProto(pb.GetServerInfoResponse p)
        {
            var caps = p.Capabilities ?? new pb.Capabilities();
            var limits = caps.Limits ?? new pb.Limits();
            var info = new ServerInfo
            {
                ServerVersion = p.ServerVersion,
                ProtocolMajor = p.Protocol == null ? 0 : (int)p.Protocol.Major,
                ProtocolMinor = p.Protocol == null ? 0 : (int)p.Protocol.Minor,
                AuthRequired = caps.AuthRequired,
                MaxMessageBytes = (long)limits.MaxMessageBytes,
                UploadChunkBytes = (int)limits.UploadChunkBytes,
                MaxJoints = (int)limits.MaxJoints,
                MaxFrames = (int)limits.MaxFrames,
            };
            foreach (var m in caps.Methods)
                info.Methods.Add(new MethodDescription
                {
                    Name = m.Name, Description = m.Description, Presets = m.Presets.ToArray(),
                    Available = m.Available, UnavailableReason = m.UnavailableReason, SendsPreviews = m.SendsPreviews,
                    MinContextSeconds = m.MinContextSeconds, KeySpacingSeconds = m.KeySpacingSeconds, MaxGapSeconds = m.MaxGapSeconds,
                    ProducesMotion = m.Output != pb.MethodOutput.Video,
                });
            foreach (var d in caps.Devices) info.Devices.Add(d.Name);
            return info;
        }

        public static JobState FromProto(pb.JobState s)
        {
            // The domain enum lists the wire values in wire order; a state added later reads as unknown.
            return (int)s >= 0 && (int)s <= (int)JobState.Interrupted ? (JobState)(int)s : JobState.Unspecified;
        }

        public static JobSummary FromProto(pb.JobSummary j)
        {
            var summary = new JobSummary
            {
                JobId = j.JobId, State = FromProto(j.State), CharacterId = j.CharacterId, Method = j.Method,
                Label = j.Label, LastSeq = j.LastSeq, TotalFrames = (int)j.TotalFrames,
            };
            foreach (var kv in j.ClientTags) summary.ClientTags[kv.Key] = kv.Value;
            return summary;
        }

        public static JobEvent FromProto(pb.JobEvent e)
        {
            JobEvent ev;
            switch (e.KindCase)
            {
                case pb.JobEvent.KindOneofCase.Queued:
                    ev = new QueuedEvent { Position = (int)e.Queued.Position };
                    break;
                case pb.JobEvent.KindOneofCase.Progress:
                    var p = e.Progress;
                    ev = new ProgressEvent
                    {
                        Stage = p.Stage, StageFraction = p.StageFraction, Fraction = p.Fraction,
                        EtaSeconds = p.HasEtaSeconds ? p.EtaSeconds : -1, Message = p.Message,
                    };
                    break;
                case pb.JobEvent.KindOneofCase.Preview:
                    var v = e.Preview;
                    ev = new PreviewEvent
                    {
                        Stage = v.Stage, Frame = (int)v.Frame, View = (int)v.View, MimeType = v.MimeType,
                        Data = v.Data.ToByteArray(), Width = (int)v.Width, Height = (int)v.Height,
                    };
                    break;
                case pb.JobEvent.KindOneofCase.Motion:
                    var m = e.Motion;
                    ev = new MotionEvent
                    {
                        FrameStart = (int)m.FrameStart, FrameCount = (int)m.FrameCount, IsFinal = m.IsFinal, JointCount = (int)m.JointCount,
                        Rotations = m.Rotations.ToArray(), RootTranslations = m.RootTranslations.ToArray(),
                        Translations = m.Translations.Count == 0 ? null : m.Translations.ToArray(),
                    };
                    break;
                case pb.JobEvent.KindOneofCase.Completed:
                    var c = new CompletedEvent { Summary = e.Completed.Summary, TotalFrames = (int)e.Completed.TotalFrames };
                    foreach (var kv in e.Completed.Metrics) c.Metrics[kv.Key] = kv.Value;
                    ev = c;
                    break;
                case pb.JobEvent.KindOneofCase.Failed:
                    ev = new FailedEvent { Code = (RpcCode)e.Failed.Code, Message = e.Failed.Message, Field = e.Failed.Field };
                    break;
                case pb.JobEvent.KindOneofCase.Cancelled:
                    ev = new CancelledEvent { Reason = e.Cancelled.Reason };
                    break;
                case pb.JobEvent.KindOneofCase.Interrupted:
                    ev = new InterruptedEvent { Reason = e.Interrupted.Reason };
                    break;
                default:
                    // A kind added after this plugin was built: skipped, but its seq still counts (protocol 1.2).
                    ev = new UnknownEvent();
                    break;
            }
            ev.JobId = e.JobId;
            ev.Seq = e.Seq;
            return ev;
        }
    }
}
