"""Start the render node: rendered RGB + metric depth for the TF pose of the camera.

ros2 launch pose2rgbd render.launch.py checkpoint:=/path/model.pt [rate:=10.0 device:=cuda gps_topic:=/fix ...]
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("checkpoint", description="model checkpoint (.pt) written by `pose2rgbd train`"),
        DeclareLaunchArgument(
            "map",
            default_value="",
            description="place map the hybrid reads its keyframes from (empty: the checkpoint's own, or its embedded)",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("pose2rgbd"), "config", "render.yaml"]),
            description="YAML with the render node's parameters (/**: ros__parameters: ..., as config/render.yaml; "
            "a section keyed by the bare node name does not apply under the namespace)",
        ),
        DeclareLaunchArgument("namespace", default_value="pose2rgbd", description="namespace of the node and topics"),
        DeclareLaunchArgument(
            "world_frame", default_value="", description="TF frame poses are looked up in (empty: the model's own)"
        ),
        DeclareLaunchArgument(
            "camera_frame", default_value="camera_optical_frame", description="camera optical frame followed in TF"
        ),
        DeclareLaunchArgument("pose_source", default_value="tf", description="camera pose from 'tf' or a 'topic'"),
        DeclareLaunchArgument("rate", default_value="10.0", description="render rate in Hz"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument(
            "gps_topic",
            default_value="/gps/fix",
            description="the robot's NavSatFix: a fix far from the model's place flags every render out of bounds "
            "(docs/ros.md, 'Wrong place'; empty: not subscribed)",
        ),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution(
                    [FindPackageShare("pose2rgbd"), "config", "fastdds_large_images.xml"]
                ),
            ),
            description="Fast DDS profile of the render node's process, so that its large images reach best-effort "
            "subscribers on this machine (docs/ros.md, 'Large images over DDS'); default: "
            "FASTRTPS_DEFAULT_PROFILES_FILE where it is set, else the package's config/fastdds_large_images.xml",
        ),
    ]
    node = Node(
        package="pose2rgbd",
        executable="render_node",
        name="pose2rgbd_renderer",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        additional_env={"FASTRTPS_DEFAULT_PROFILES_FILE": LaunchConfiguration("fastdds_profile")},
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "engine.checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "engine.map": ParameterValue(LaunchConfiguration("map"), value_type=str),
                "engine.device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "world_frame": ParameterValue(LaunchConfiguration("world_frame"), value_type=str),
                "camera_frame": ParameterValue(LaunchConfiguration("camera_frame"), value_type=str),
                "pose_source": ParameterValue(LaunchConfiguration("pose_source"), value_type=str),
                "rate_hz": ParameterValue(LaunchConfiguration("rate"), value_type=float),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "topics.gps": ParameterValue(LaunchConfiguration("gps_topic"), value_type=str),
            },
        ],
    )
    return LaunchDescription([*args, node])
